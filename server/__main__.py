"""``python -m server``: read the configuration, configure logging, serve until a signal.

Exit status: 0 after a graceful shutdown (SIGTERM or SIGINT) and after ``--help`` (every
setting with its default), 2 for a bad configuration or an unknown argument (one line on
stderr, nothing bound), 1 if the server cannot start (e.g. the port is taken) or a worker
process failed.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from . import logs
from .app import Gateway
from .config import Config, ConfigError, help_text
from .logs import configure_logging, log_event
from .shared_metrics import SharedMetrics

logger = logging.getLogger("server.__main__")  # not "__main__" under python -m

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# The cyclic garbage collector's thresholds: young collections every 20,000 new objects
# (Python's default: 2,000), so full ones ten times rarer. A process holding 12,500
# connections holds about a million objects, nearly all alive, and a full collection
# scanned them all (up to 300 ms here, finding nothing) after every 240,000 new ones: 85 us
# of each handshake past 12,000 connections (9 us now), and each time a pause of every
# connection of the process. Closed connections do not wait for it: their reference counts
# free them (server.connection breaks their one cycle).
GC_THRESHOLDS = (20_000, 10, 10)


def main(environ: Mapping[str, str] | None = None, argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["--help"], ["-h"]):
        print(help_text(), end="", flush=True)
        return 0
    if args:
        print(
            f"usage error: unknown argument {args[0]!r}; python -m server takes only --help "
            "(settings are environment variables)",
            file=sys.stderr,
            flush=True,
        )
        return 2
    try:
        config = Config.from_env(os.environ if environ is None else environ)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr, flush=True)
        return 2
    configure_logging(config.log_format, config.log_level)
    if config.workers > 1:
        return supervise(config)
    return serve_process(config)


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop factory for WS_EVENT_LOOP: uvloop if chosen or (auto) installed."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is installed where tests run
        if choice == "uvloop":
            raise
        return None
    return uvloop.new_event_loop


def serve_process(config: Config, worker: int = 0, metrics_dir: Path | None = None) -> int:
    """Run one gateway in this process until SIGTERM/SIGINT; return the exit status.

    ``metrics_dir``: where the workers of one supervisor share their metrics (None: alone).
    """
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        with asyncio.Runner(loop_factory=loop_factory(config.event_loop)) as runner:
            return runner.run(_serve(config, worker, metrics_dir))
    finally:
        logs.flush()  # what the last loop turns logged, before the process ends


async def _serve(config: Config, worker: int, metrics_dir: Path | None = None) -> int:
    gateway = Gateway(config, worker=worker)
    snapshots = None
    if metrics_dir is not None:
        shared = SharedMetrics(metrics_dir, worker, gateway.metrics)
        gateway.http.render_metrics = shared.render
        snapshots = asyncio.create_task(shared.run())
    try:
        return await _run(gateway, config)
    finally:
        if snapshots is not None:
            snapshots.cancel()


async def _run(gateway: Gateway, config: Config) -> int:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, gateway.request_stop, "SIGTERM")
    loop.add_signal_handler(
        signal.SIGINT, functools.partial(gateway.request_stop, "SIGINT", force_if_repeated=True)
    )
    try:
        await gateway.start()
    except OSError as exc:
        log_event(
            logger,
            logging.ERROR,
            "server_failed",
            host=config.host,
            port=config.port,
            error=f"{type(exc).__name__}: {exc}",
        )
        return 1
    await gateway.serve_until_stopped()
    return 0


def _worker_main(
    config: Config, worker: int, metrics_dir: Path
) -> None:  # pragma: no cover - runs in a child
    os.setpgid(0, 0)  # signals reach workers only through the supervisor
    configure_logging(config.log_format, config.log_level)
    sys.exit(serve_process(config, worker, metrics_dir))


def supervise(config: Config) -> int:
    """Run ``config.workers`` processes sharing the port (SO_REUSEPORT); relay stop signals.

    The kernel spreads new connections over the workers. Each worker has its own limits
    (``WS_MAX_CONNECTIONS`` is per worker) and metrics, which any worker's /metrics answers
    for all of them through a directory they share (server/shared_metrics.py).
    """
    metrics_dir = Path(tempfile.mkdtemp(prefix="ws-metrics-"))
    try:
        return _supervise(config, metrics_dir)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _supervise(config: Config, metrics_dir: Path) -> int:
    context = multiprocessing.get_context("spawn")
    # A spawned child finds its target by module name. Under `python -m server` this module
    # is __main__, which multiprocessing does not re-import in the child for a package's
    # __main__: name the target by its importable name, server.__main__.
    from server.__main__ import _worker_main as target

    workers = [
        context.Process(target=target, args=(config, n, metrics_dir), name=f"gateway-worker-{n}")
        for n in range(config.workers)
    ]
    stopping = False

    def relay(signum: int, _frame: object = None) -> None:
        nonlocal stopping
        stopping = True
        for process in workers:
            if process.pid is not None and process.exitcode is None:
                os.kill(process.pid, signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, relay)
    for process in workers:
        process.start()
    log_event(
        logger,
        logging.INFO,
        "supervisor_started",
        workers=config.workers,
        pids=[p.pid for p in workers],
    )
    status = 0
    pending = {process.sentinel: process for process in workers}
    while pending:
        for sentinel in multiprocessing.connection.wait(list(pending)):
            process = pending.pop(sentinel)  # type: ignore[call-overload]
            process.join()
            # A worker stopped by the signal we relayed (before it could install its own
            # handler, while still starting) did what was asked: not a failure.
            relayed = stopping and process.exitcode in (-signal.SIGTERM, -signal.SIGINT)
            if process.exitcode != 0 and not relayed:
                status = 1
                log_event(
                    logger,
                    logging.ERROR,
                    "worker_failed",
                    worker=process.name,
                    worker_pid=process.pid,
                    exitcode=process.exitcode,
                )
                if not stopping:
                    relay(signal.SIGTERM)
    log_event(logger, logging.INFO, "supervisor_stopped", status=status)
    return status


if __name__ == "__main__":
    sys.exit(main())
