"""The README's promises about set-up hold: two Quickstart commands, CI runs the second."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def quickstart_commands() -> list[str]:
    section = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    section = section.split("\n### ", 1)[0]  # subsections are not the Quickstart proper
    return re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)


def test_quickstart_has_exactly_two_one_line_commands():
    commands = quickstart_commands()
    assert len(commands) == 2
    assert all("\n" not in c for c in commands)


def test_lab_command_opens_the_notebooks_on_localhost_with_the_token_on():
    lab = quickstart_commands()[0]
    assert "jupyter lab" in lab
    assert "--ip=127.0.0.1" in lab
    assert "--notebook-dir=notebooks" in lab
    assert "token" not in lab.lower() and "password" not in lab.lower()


def test_ci_runs_the_readme_test_command_as_written():
    test_command = quickstart_commands()[1]
    assert "pytest" in test_command
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines


def test_both_commands_install_everything_the_same_way():
    lab, test = quickstart_commands()
    install = 'python3 -m venv .venv && .venv/bin/pip install --no-compile -e ".[dev]"'
    assert lab.startswith(install) and test.startswith(install)


def test_pytest_collects_the_notebooks_with_nbval_lax():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'testpaths = ["notebooks", "tests"]' in pyproject
    assert 'addopts = "--nbval-lax -n 2 --dist loadfile"' in pyproject
