"""``python -m stack scenario``: the subcommand that runs a failure scenario on a fresh stack.

    python -m stack scenario --list
    python -m stack scenario nginx-restart
    python -m stack scenario all

Starts the stack(s) the scenario needs, prints every step, observation and check with its
time, then a summary with the measured figures; always removes the stacks; exits 0 when
every check held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import textwrap
import uuid
from concurrent.futures import ThreadPoolExecutor

from stack.gateway import GatewayStack
from stack.scenarios import SCENARIOS, Scenario, run
from stack.scenarios.logbook import Report, printer


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``scenario`` subcommand to ``python -m stack``'s parser."""
    p = sub.add_parser(
        "scenario",
        help="run a failure scenario on a fresh stack and watch it (--list)",
        description="Run a failure scenario on a fresh stack and watch it: every step,"
        " observation and check with its time, then the figures; the stack is always removed;"
        " exit status 0 when every check held.",
    )
    p.add_argument(
        "name",
        nargs="?",
        choices=[*SCENARIOS, "all"],
        metavar="NAME",
        help="a scenario from --list, or 'all'",
    )
    p.add_argument("--list", action="store_true", help="list the scenarios and what each proves")
    p.set_defaults(run=main)


def list_scenarios() -> str:
    out = []
    for s in SCENARIOS.values():
        out.append(f"{s.number}. {s.name:<16} {s.title}")
        out.extend(textwrap.wrap(s.proves, 88, initial_indent=" " * 6, subsequent_indent=" " * 6))
    return "\n".join(out)


def main(args: argparse.Namespace) -> int:
    if args.list or not args.name:
        print(list_scenarios())
        return 0
    chosen = list(SCENARIOS.values()) if args.name == "all" else [SCENARIOS[args.name]]
    results = [(s, run_one(s)) for s in chosen]
    if len(results) > 1:
        print()
        for scenario, report in results:
            print(f"{'PASSED' if report.ok else 'FAILED'}  {scenario.number}. {scenario.name}")
    return 0 if all(report.ok for _, report in results) else 1


def run_one(scenario: Scenario) -> Report:
    """Start the scenario's stacks, run it with live output, tear everything down."""
    echo = printer()
    title = f"scenario {scenario.number} {scenario.name}: {scenario.title}"
    echo(f"\n{title}\n" + "\n".join(textwrap.wrap(scenario.proves, 92)) + "\n")
    report = Report(title, echo)
    suffix = uuid.uuid4().hex[:6]
    stacks = {
        role: GatewayStack(f"wsgw-scn-{scenario.name}-{role}-{suffix}", options)
        for role, options in scenario.stacks.items()
    }
    try:
        if stacks:  # none: the scenario deploys its own (rolling-update: a swarm)
            report.step("starting " + ", ".join(s.name for s in stacks.values()))
            with ThreadPoolExecutor(len(stacks)) as pool:
                for future in [pool.submit(s.start) for s in stacks.values()]:
                    future.result()
            ready = ", ".join(f"{s.name} at {s.url}" for s in stacks.values())
            report.note(f"stack ready: {ready}")
        run(scenario, stacks, report)
    except KeyboardInterrupt:
        report.check("scenario ran to its end", False, "interrupted")
    except Exception as e:
        report.error("stacks started", e)
    finally:
        report.step("removing the stacks")
        for s in stacks.values():
            s.down()
    print()
    print(report.summary(), flush=True)
    return report
