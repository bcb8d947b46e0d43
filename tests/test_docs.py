"""The documentation a user and the next engineer read: a short README that keeps the two set-up commands,
links that resolve, and text that speaks of the project rather than of its development history."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").rglob("*.md"))]
# development history: issue or session numbers, or a file that only the development machine holds
HISTORY = re.compile(r"(?i:session[ -][0-9]|issue[- ]?[0-9])|" + "ANCH" + r"ORS(\.md|\b)")


def test_readme_is_short_and_keeps_the_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    assert ".venv/bin/pimc demo" in text and ".venv/bin/python -m pytest" in text
    assert "Run the test suite" in text  # .ci/run finds the test command after this line


def test_every_relative_link_resolves():
    broken = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" not in target and not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert not broken


def test_no_development_history_in_code_tests_or_docs():
    files = [p for p in ROOT.rglob("*") if p.suffix in (".py", ".md", ".toml") and ".venv" not in p.parts
             and ".git" not in p.parts and p.name != "CHANGELOG.md"]
    found = [f"{p.relative_to(ROOT)}:{i}" for p in files
             for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if HISTORY.search(line)]
    assert not found


def test_documentation_site_builds_strict(tmp_path):
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "targets" / "escalate" / "index.html").exists()


def test_reference_pages_are_generated_from_the_code(tmp_path):
    from pimc.cli.main import cli
    from pimc.cli.reference_pages import write_reference

    for path in write_reference(tmp_path, cli):
        relative = path.relative_to(tmp_path)
        assert (ROOT / "docs" / relative).read_text() == path.read_text(), (
            f"docs/{relative} is stale: run `pimc targets --markdown docs`")


def test_every_hardware_default_on_a_target_page_equals_pimc_targets_json():
    import json
    import subprocess
    import sys

    data = json.loads(subprocess.run([sys.executable, "-m", "pimc", "targets", "--json"], capture_output=True,
                                     text=True, check=True).stdout)
    for name, info in data.items():
        page = (ROOT / "docs" / "targets" / f"{name}.md").read_text()
        rows = dict(re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", page, flags=re.M))
        assert rows == {f["name"]: str(f["default"]) for f in info["hardware"]}


def test_the_report_page_lists_every_top_level_field_of_the_schema():
    import json

    schema = json.loads((ROOT / "docs" / "report.schema.json").read_text())
    page = (ROOT / "docs" / "guide" / "report.md").read_text()
    assert all(f"| `{name}` |" in page for name in schema["properties"])


def test_one_version_in_the_package_the_metadata_and_the_changelog():
    import tomllib

    from pimc.compiler.version import VERSION

    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"] == VERSION
    assert f"## {VERSION}" in (ROOT / "CHANGELOG.md").read_text()


def _pimc_lines() -> list[tuple[str, str]]:
    """(file, line) of every `pimc ...` command in a bash block of the README and the docs."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), flags=re.S):
            joined = block.replace("\\\n", " ")
            for line in joined.splitlines():
                for part in re.split(r"&&|\|\||;", line.split("#")[0]):
                    words = part.strip().split()
                    if words and words[0] == "pimc":
                        found.append((str(doc.relative_to(ROOT)), part.strip()))
    return found


def test_every_pimc_command_in_the_docs_names_real_commands_and_options():
    import shlex

    import click

    from pimc.cli.main import cli

    assert len(_pimc_lines()) > 10
    problems = []
    for where, line in _pimc_lines():
        words = shlex.split(line.replace('"$m"', "m").replace("$", ""))[1:]
        command, ctx = cli, click.Context(cli, info_name="pimc")
        while isinstance(command, click.Group) and words and not words[0].startswith("-"):
            command = command.get_command(ctx, words.pop(0))
            if command is None:
                break
            ctx = click.Context(command, parent=ctx)
        if command is None:
            problems.append(f"{where}: {line}: no such command")
            continue
        known = {o for p in command.params for o in [*p.opts, *p.secondary_opts]} | {"--help"}
        problems += [f"{where}: {line}: unknown option {w}" for w in words
                     if w.startswith("--") and w.split("=")[0] not in known]
    assert not problems
