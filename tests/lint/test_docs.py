"""README.md and docs/ stay true as the code changes: every setting, default, metric and close
code they must document is read from the code and looked up where the README sends readers.

Also checks that every relative link resolves (file and heading), and that the configuration
files explain their settings in comments.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

from server import metrics
from server.config import SETTINGS, Config, help_text
from stack import compose_file

ROOT = Path(__file__).resolve().parents[2]
README = "README.md"
CONFIGURATION = "docs/configuration.md"
HTTP_AND_METRICS = "docs/http-and-metrics.md"
TROUBLESHOOTING = "docs/troubleshooting.md"
# Each heading the issues ask for, in the file that holds it: the README keeps what a
# newcomer reads first, docs/ the reference, one file each.
SECTIONS = {
    README: (
        "Quick start",
        "Architecture",
        "WebSocket API",
        "Close codes",
        "Testing",
        "Reproducing failure scenarios",
        "Reference",
    ),
    CONFIGURATION: (
        "Configuration",
        "Server (`server/config.py`)",
        "NGINX (`nginx/entrypoint.sh`)",
        "Compose (`docker-compose.yaml`)",
        "Rate limits and caps",
    ),
    HTTP_AND_METRICS: ("HTTP endpoints", "Metrics", "Handshake answers other than 101"),
    "docs/client-examples.md": ("Client examples",),
    "docs/logs.md": ("Logs",),
    "docs/testing.md": ("Testing",),
    "docs/scenarios.md": ("Failure scenarios",),
    "docs/benchmarks.md": ("Benchmark results",),
    TROUBLESHOOTING: ("Troubleshooting",),
    "docs/security.md": ("Security", "Threat model", "Auditing dependencies"),
    "docs/deployment.md": ("Deployment beyond one machine", "Docker Swarm", "Kubernetes"),
    "docs/ci.md": ("Continuous integration",),
    "docs/handlers.md": ("Your own handler", "The contract", "Shipping a handler"),
    "docs/observability.md": ("Observability", "First queries", "Alerts"),
}
# Markdown whose relative links must resolve: every .md of the repository (README.md,
# REQUIREMENTS.md, docs/, nginx/ ...) outside hidden and generated folders.
MARKDOWN = sorted(
    str(path.relative_to(ROOT))
    for path in ROOT.rglob("*.md")
    if not any(part.startswith(".") for part in path.relative_to(ROOT).parts)
)
# Close codes a client of this gateway can see (server/app.py sends 1001, 1002, 1007,
# 1008, 1009 and 1011; 1000 and 1005 come from clients; 1006 is a drop).
CLOSE_CODES = (1000, 1001, 1002, 1005, 1006, 1007, 1008, 1009, 1011)
# Problems the troubleshooting guide must cover (issue #6), by words in their headings.
TROUBLES = ("1006", "502", "426", "429", "60 seconds", "DNS", "in use", "Offline", "permission")


@cache
def text(path: str) -> str:
    return (ROOT / path).read_text()


def prose(path: str) -> str:
    """The text of ``path`` without its fenced code blocks (a ``#`` there is no heading)."""
    return re.sub(r"^```.*?^```", "", text(path), flags=re.M | re.S)


def headings(path: str) -> list[str]:
    return re.findall(r"^#{1,6} (.+)$", prose(path), re.M)


def anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def anchors(path: str) -> set[str]:
    """Every in-page anchor of ``path``; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for heading in headings(path):
        slug = anchor(heading)
        out.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return out


def table_rows(path: str, section: str) -> dict[str, str]:
    """The rows of the first table under heading ``section`` of ``path``, keyed by their
    first cell."""
    lines = text(path).splitlines()
    start = next(
        (i for i, line in enumerate(lines) if re.fullmatch(rf"#+ {re.escape(section)}", line)),
        None,
    )
    assert start is not None, f"{path} has no heading '{section}'"
    rows: dict[str, str] = {}
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            rows[line.split("|")[1].strip().strip("`")] = line
        elif rows or line.startswith("#"):
            break
    assert rows, f"{path} has no table under '{section}'"
    return rows


def test_every_section_is_in_its_file() -> None:
    """The README and each docs/ file have the sections the issues list, as headings."""
    missing = [
        f"{path}: {section}"
        for path, sections in SECTIONS.items()
        for section in sections
        if section not in headings(path)
    ]
    assert missing == []


def test_readme_links_every_docs_file() -> None:
    """Each file of docs/ is linked from the README, and the README names no other."""
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)(?:#[\w-]*)?\)", text(README)))
    on_disk = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert sorted(on_disk - linked) == [], "docs/ files the README does not link"
    assert sorted(linked - on_disk) == [], "README links docs/ files that do not exist"
    assert set(SECTIONS) - {README} == on_disk


@pytest.mark.parametrize("path", MARKDOWN)
def test_relative_links_resolve(path: str) -> None:
    """Every relative link of ``path`` names an existing file, and an existing heading when it
    has an #anchor."""
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(path)):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto: -- not in the repository
        file, _, fragment = target.partition("#")
        resolved = (ROOT / path).parent / file if file else ROOT / path
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md":
            if fragment not in anchors(str(resolved.resolve().relative_to(ROOT))):
                broken.append(f"{target}: no such heading")
        elif fragment:
            broken.append(f"{target}: an anchor into a file that is not Markdown")
    assert not broken, f"{path}: " + "; ".join(broken)


def server_settings() -> dict[str, str]:
    """Environment variable -> its default as text: every variable Config.from_env reads
    (server/settings.py's SETTINGS table)."""
    pairs = [(setting.field, variable) for variable, setting in SETTINGS.items()]
    assert len(pairs) >= 10, "server/settings.py's SETTINGS table lost its settings?"
    defaults = {f.name: f.default for f in dataclasses.fields(Config)}
    out = {}
    for field, variable in pairs:
        value = defaults[field]
        if isinstance(value, bool):
            text = str(value).lower()
        elif isinstance(value, float) and value.is_integer():
            text = str(int(value))
        elif isinstance(value, tuple) or value == "":
            text = "empty"
        else:
            text = str(value)
        out[variable] = text
    return out


def undocumented(section: str, settings: dict[str, str]) -> list[str]:
    """Settings without a row in the table under ``section`` of docs/configuration.md, or
    whose row's Default cell does not show the default (`code`, or the word empty)."""
    rows = table_rows(CONFIGURATION, section)
    problems = []
    for variable, default in settings.items():
        row = rows.get(variable)
        expected = "empty" if default == "empty" else f"`{default}`"
        if row is None:
            problems.append(f"{variable}: no row")
        elif expected not in row.split("|")[2]:
            problems.append(f"{variable}: default {expected} not in {row.split('|')[2]!r}")
    return problems


def test_every_server_setting_is_documented() -> None:
    """Each variable server/config.py reads has a row in the server table, with its default."""
    problems = undocumented("Server (`server/config.py`)", server_settings())
    assert not problems, "\n".join(problems)


def nginx_settings() -> dict[str, str]:
    """Setting -> default, from the SETTINGS list of nginx/entrypoint.sh."""
    source = (ROOT / "nginx" / "entrypoint.sh").read_text()
    settings = dict(re.findall(r'^\s+"([A-Z_]+)\|([^|]*)\|', source, re.M))
    assert len(settings) >= 10, "nginx/entrypoint.sh has no SETTINGS list any more?"
    return settings


def test_every_nginx_setting_is_documented() -> None:
    """Each setting of nginx/entrypoint.sh has a row in the NGINX table, with its default."""
    problems = undocumented("NGINX (`nginx/entrypoint.sh`)", nginx_settings())
    assert not problems, "\n".join(problems)


# Compose files whose ${VARIABLE:-default}s users set from the shell or .env.
COMPOSE_FILES = (
    "docker-compose.yaml",
    "docker-compose.tls.yaml",
    "docker-compose.host-network.yaml",
)
# Settings whose compose variable has another name (NGINX's default differs in compose).
COMPOSE_NAMES = {"WORKER_PROCESSES": "NGINX_WORKER_PROCESSES"}


def compose_variables() -> dict[str, str]:
    """Each ${VARIABLE:-default} of the compose files -> its default."""
    found: dict[str, str] = {}
    for path in COMPOSE_FILES:
        for name, default in re.findall(r"\$\{(\w+):-([^}]*)\}", text(path)):
            found.setdefault(name, default)
    return found


def test_every_compose_variable_is_documented() -> None:
    """Each ${VARIABLE:-default} of the compose files is documented with that default: a
    server or NGINX setting in its table (the compose default is the container's own, or
    empty to let the container derive it), any other in the compose table."""
    settings = {**server_settings(), **nginx_settings()}
    rows = table_rows(CONFIGURATION, "Compose (`docker-compose.yaml`)")
    problems = []
    for name, default in compose_variables().items():
        if name in settings and name not in rows:
            if default not in ("", settings[name]):
                problems.append(f"{name}: compose default {default!r} != {settings[name]!r}")
        elif name not in rows:
            problems.append(f"{name}: no row")
        elif f"`{default}`" not in rows[name]:
            problems.append(f"{name}: default {default!r} missing")
    assert not problems, "\n".join(problems)


def test_every_documented_setting_passes_through_compose() -> None:
    """Each server and NGINX setting can be set from .env: docker-compose.yaml passes it as
    ${VARIABLE:-default} (but for the few that wire the services together)."""
    documented = [
        *table_rows(CONFIGURATION, "Server (`server/config.py`)"),
        *table_rows(CONFIGURATION, "NGINX (`nginx/entrypoint.sh`)"),
    ]
    variables = compose_variables()
    missing = [
        name
        for name in documented
        if name not in ("Variable", "---", *compose_file.WIRING)
        and COMPOSE_NAMES.get(name, name) not in variables
    ]
    assert missing == []


def test_env_example_lists_every_compose_variable() -> None:
    """.env.example names each compose variable once, with its default, and nothing else."""
    listed = dict(re.findall(r"^#? ?(\w+)=(.*)$", text(".env.example"), re.M))
    for compose_own in ("COMPOSE_FILE", "COMPOSE_PROFILES"):  # Compose's, shown as examples
        listed.pop(compose_own, None)
    variables = compose_variables()
    assert sorted(variables.keys() - listed.keys()) == [], "not in .env.example"
    assert sorted(listed.keys() - variables.keys()) == [], "in .env.example, not in compose"
    wrong = {name: value for name, value in listed.items() if value.strip('"') != variables[name]}
    assert wrong == {}, "defaults in .env.example differ from the compose files'"


def test_every_metric_is_documented() -> None:
    """Each metric family server/metrics.py exposes has a row in the metrics table."""
    families = set(re.findall(r"^# TYPE (\w+) ", metrics.Metrics().render(), re.M))
    assert len(families) >= 10
    rows = table_rows(HTTP_AND_METRICS, "Metrics")
    assert sorted(families - rows.keys()) == []
    assert sorted(rows.keys() - families - {"Metric", "---"}) == [], "documented but gone"


def test_readme_documents_every_close_code() -> None:
    """The close-code table explains every code a client of the gateway can see."""
    rows = table_rows(README, "Close codes")
    assert [code for code in CLOSE_CODES if str(code) not in rows] == []


def troubleshooting_entries() -> dict[str, str]:
    entries = re.split(r"^## (.+)$", text(TROUBLESHOOTING), flags=re.M)[1:]
    return dict(zip(entries[::2], entries[1::2], strict=True))


def test_troubleshooting_entries_have_symptom_cause_fix() -> None:
    """Each troubleshooting entry gives symptom, cause and fix; the issue's problems are all
    there."""
    entries = troubleshooting_entries()
    for title, body in entries.items():
        for part in ("**Symptom**", "**Cause**", "**Fix**"):
            assert part in body, f"{title}: no {part}"
    titles = " / ".join(entries)
    assert [t for t in TROUBLES if t.lower() not in titles.lower()] == []


def test_placeholders_or_results_present() -> None:
    """The benchmark and scenario pages keep their marker for the pasted results."""
    markers = {
        "docs/benchmarks.md": "<!-- bench-results -->",
        "docs/scenarios.md": "<!-- scenarios -->",
    }
    assert [path for path, marker in markers.items() if marker not in text(path)] == []


def paragraphs(path: Path) -> list[list[str]]:
    """Blocks of consecutive non-blank lines."""
    blocks, block = [], []
    for line in path.read_text().splitlines():
        if line.strip():
            block.append(line.strip())
        elif block:
            blocks.append(block)
            block = []
    return blocks + ([block] if block else [])


# Lines that only structure a file (block openers, includes, labels) need no comment.
STRUCTURE = re.compile(
    r"^(events|http|server|upstream|location|map|include|limit_except|if)\b|^}|^LABEL\b"
)


@pytest.mark.parametrize(
    "path",
    [
        "nginx/nginx.conf",
        *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "nginx").glob("*/*.conf")),
        "nginx/Dockerfile",
        "server/Dockerfile",
    ],
)
def test_configuration_files_are_commented(path: str) -> None:
    """Every directive or instruction sits in a paragraph that has a comment explaining it."""
    dockerfile = path.endswith("Dockerfile")
    statement = re.compile(r"^[A-Z]+\s" if dockerfile else r"^[a-z_]+(\s|;|$)")
    bare = [
        line
        for block in paragraphs(ROOT / path)
        if not any(line.startswith("#") for line in block)
        for line in block
        if statement.match(line) and not STRUCTURE.match(line)
    ]
    assert not bare, f"{path}: settings without a comment: {bare}"


def test_compose_file_explains_its_key_settings() -> None:
    """docker-compose.yaml explains isolation, hardening and limits in its comments."""
    compose = (ROOT / "docker-compose.yaml").read_text()
    comments = " ".join(
        line.split("#", 1)[1] for line in compose.splitlines() if "#" in line
    ).lower()
    explained = ("internal", "non-root", "read-only", "capabilit", "limits", "descriptor")
    assert [word for word in explained if word not in comments] == []


def test_python_modules_of_examples_parse() -> None:
    """The documented Python example is valid Python (it also runs in tests/e2e)."""
    ast.parse((ROOT / "examples" / "python_client.py").read_text())


def test_every_documented_variable_is_read_by_the_code() -> None:
    """No row documents a variable nothing reads: the server table's are read by
    server/config.py, the NGINX table's are in nginx/entrypoint.sh's SETTINGS."""
    for section, settings in (
        ("Server (`server/config.py`)", server_settings()),
        ("NGINX (`nginx/entrypoint.sh`)", nginx_settings()),
    ):
        rows = set(table_rows(CONFIGURATION, section)) - {"Variable", "---"}
        assert sorted(rows - settings.keys()) == [], f"documented in {section}, never read"


def test_a_setting_compose_renames_says_so() -> None:
    """A setting compose passes under another name names it in its row and in the text
    that says how compose passes settings through."""
    rows = table_rows(CONFIGURATION, "NGINX (`nginx/entrypoint.sh`)")
    intro = prose(CONFIGURATION).split("## Server")[0]
    for name, compose_name in COMPOSE_NAMES.items():
        assert f"`{compose_name}`" in rows[name], name
        assert f"`{compose_name}`" in intro, name


def test_help_and_the_server_table_list_the_same_settings() -> None:
    """`python -m server --help` (config.SETTINGS) and the server table name the same
    variables, and the help shows each with the default the table gives."""
    rows = set(table_rows(CONFIGURATION, "Server (`server/config.py`)")) - {"Variable", "---"}
    assert sorted(rows ^ SETTINGS.keys()) == []
    shown = dict(re.findall(r"^  ([A-Z_]+)=(.*)$", help_text(), re.M))
    expected = {name: "" if v == "empty" else v for name, v in server_settings().items()}
    assert shown == expected


def test_dependencies_are_updated_by_a_mechanism() -> None:
    """.github/dependabot.yml watches pip (both locks), Docker and GitHub Actions."""
    config = yaml.safe_load(text(".github/dependabot.yml"))
    watched = {(u["package-ecosystem"], d) for u in config["updates"] for d in
               u.get("directories", [u.get("directory")])}  # fmt: skip
    assert {("pip", "/server"), ("pip", "/requirements"), ("github-actions", "/")} <= watched
    assert {("docker", "/server"), ("docker", "/nginx")} <= watched


def test_license_and_changelog_exist_and_agree_with_pyproject() -> None:
    """LICENSE is the MIT text pyproject.toml declares; CHANGELOG.md has an Unreleased part."""
    assert 'license = { text = "MIT" }' in text("pyproject.toml")
    assert text("LICENSE").startswith("MIT License\n")
    assert "## Unreleased" in text("CHANGELOG.md")


def test_readme_names_exactly_two_commands_under_two_commands() -> None:
    """The "Two commands" block holds two commands, and the prerequisites come first."""
    readme = text(README)
    block = readme.split("### Two commands", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    assert [line.split()[:2] for line in block.splitlines()] == [["make", "up"], ["make", "test"]]
    assert readme.index("### Prerequisites") < readme.index("### Two commands")


# Text a reader cannot follow: an issue of a tracker they do not see.
ISSUE_REFERENCE = re.compile(r"(?<![\w/])(?:issue ?#?\d+|#\d+\b)", re.I)


def test_no_issue_numbers_in_requirements_docs_or_test_docstrings() -> None:
    """REQUIREMENTS.md, README.md, docs/ and the tests' docstrings say what, not which issue
    asked for it."""
    documents = [
        "REQUIREMENTS.md",
        README,
        *(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")),
    ]
    found = [f"{doc}: {m}" for doc in documents for m in ISSUE_REFERENCE.findall(text(doc))]
    for path in sorted((ROOT / "tests").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                doc = ast.get_docstring(node) or ""
                found += [f"{path.relative_to(ROOT)}: {m}" for m in ISSUE_REFERENCE.findall(doc)]
    assert found == []
