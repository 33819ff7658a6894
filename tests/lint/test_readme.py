"""README.md stays true as the code changes: every setting, default, metric and close code
it must document is read from the code and looked up in the README.

Also checks that the configuration files explain their settings in comments.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from server import metrics
from server.config import Config

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
SECTIONS = (
    "Quick start",
    "Architecture",
    "WebSocket API",
    "HTTP endpoints",
    "Client examples",
    "Configuration",
    "Testing",
    "Benchmark results",
    "Reproducing failure scenarios",
    "Troubleshooting",
    "Security",
    "Threat model",
    "Auditing dependencies",
    "Continuous integration",
)
# Close codes a client of this gateway can see (server/app.py sends 1001, 1002, 1007,
# 1008, 1009 and 1011; 1000 and 1005 come from clients; 1006 is a drop).
CLOSE_CODES = (1000, 1001, 1002, 1005, 1006, 1007, 1008, 1009, 1011)
# Problems the troubleshooting guide must cover (issue #6), by words in their headings.
TROUBLES = ("1006", "502", "426", "429", "60 seconds", "DNS", "in use", "Offline", "permission")


def table_rows(section: str) -> dict[str, str]:
    """The rows of the first table under heading ``section``, keyed by their first cell."""
    lines = README.splitlines()
    start = next(
        (i for i, line in enumerate(lines) if re.fullmatch(rf"#+ {re.escape(section)}", line)),
        None,
    )
    assert start is not None, f"README.md has no heading '{section}'"
    rows: dict[str, str] = {}
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            rows[line.split("|")[1].strip().strip("`")] = line
        elif rows or line.startswith("#"):
            break
    assert rows, f"README.md has no table under '{section}'"
    return rows


def test_readme_has_every_section() -> None:
    """The README has each section the issue lists, as a heading."""
    headings = re.findall(r"^#{2,3} (.+)$", README, re.M)
    assert [s for s in SECTIONS if s not in headings] == []


def server_settings() -> dict[str, str]:
    """Environment variable -> its default as text, read from server/config.py."""
    source = (ROOT / "server" / "config.py").read_text()
    pairs = re.findall(r'read\("(\w+)", "([A-Z_]+)"', source)
    assert len(pairs) >= 10, "server/config.py no longer reads settings with read(...)?"
    defaults = {f.name: f.default for f in dataclasses.fields(Config)}
    out = {}
    for field, variable in pairs:
        value = defaults[field]
        if isinstance(value, bool):
            text = str(value).lower()
        elif isinstance(value, float) and value.is_integer():
            text = str(int(value))
        elif isinstance(value, tuple):
            text = "empty"
        else:
            text = str(value)
        out[variable] = text
    return out


def test_readme_documents_every_server_setting() -> None:
    """Each variable server/config.py reads has a row in the server table, with its default."""
    rows = table_rows("Server (`server/config.py`)")
    problems = []
    for variable, default in server_settings().items():
        row = rows.get(variable)
        if row is None:
            problems.append(f"{variable}: no row")
        elif (f"`{default}`" if default != "empty" else "empty") not in row.split("|")[2]:
            problems.append(f"{variable}: default {default!r} not in {row.split('|')[2]!r}")
    assert not problems, "\n".join(problems)


def nginx_settings() -> dict[str, str]:
    """Setting -> default, from the SETTINGS list of nginx/entrypoint.sh."""
    source = (ROOT / "nginx" / "entrypoint.sh").read_text()
    settings = dict(re.findall(r'^\s+"([A-Z_]+)\|([^|]*)\|', source, re.M))
    assert len(settings) >= 10, "nginx/entrypoint.sh has no SETTINGS list any more?"
    return settings


def test_readme_documents_every_nginx_setting() -> None:
    """Each setting of nginx/entrypoint.sh has a row in the NGINX table, with its default."""
    rows = table_rows("NGINX (`nginx/entrypoint.sh`)")
    problems = []
    for variable, default in nginx_settings().items():
        row = rows.get(variable)
        if row is None:
            problems.append(f"{variable}: no row")
        elif f"`{default}`" not in row.split("|")[2]:
            problems.append(f"{variable}: default `{default}` not in {row.split('|')[2]!r}")
    assert not problems, "\n".join(problems)


def test_readme_documents_every_compose_variable() -> None:
    """Each ${VARIABLE:-default} of docker-compose.yaml has a row in the compose table."""
    compose = (ROOT / "docker-compose.yaml").read_text()
    variables = dict(re.findall(r"\$\{(\w+):-([^}]*)\}", compose))
    rows = table_rows("Compose (`docker-compose.yaml`)")
    problems = [
        f"{name}: {'no row' if name not in rows else f'default {default!r} missing'}"
        for name, default in variables.items()
        if name not in rows or f"`{default}`" not in rows[name]
    ]
    assert not problems, "\n".join(problems)


def test_readme_documents_every_metric() -> None:
    """Each metric family server/metrics.py exposes has a row in the metrics table."""
    families = set(re.findall(r"^# TYPE (\w+) ", metrics.Metrics().render(), re.M))
    assert len(families) >= 10
    rows = table_rows("Metrics")
    assert sorted(families - rows.keys()) == []
    assert sorted(rows.keys() - families - {"Metric", "---"}) == [], "documented but gone"


def test_readme_documents_every_close_code() -> None:
    """The close-code table explains every code a client of the gateway can see."""
    rows = table_rows("Close codes")
    assert [code for code in CLOSE_CODES if str(code) not in rows] == []


def troubleshooting_entries() -> dict[str, str]:
    section = README.split("\n## Troubleshooting\n", 1)[1].split("\n## ", 1)[0]
    entries = re.split(r"^### (.+)$", section, flags=re.M)[1:]
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


def test_readme_placeholders_or_results_present() -> None:
    """The benchmark and scenario sections keep their marker for the pasted results."""
    for marker in ("<!-- bench-results -->", "<!-- scenarios -->"):
        assert marker in README


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
    """The README's Python example is valid Python (it also runs in tests/e2e)."""
    ast.parse((ROOT / "examples" / "python_client.py").read_text())
