"""The README's two quick-start commands are exactly what CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_readme_has_exactly_two_quick_start_commands() -> None:
    commands = _quick_start_commands()
    assert len(commands) == 2, commands
    assert all("\n" not in c for c in commands)


def test_ci_runs_the_readme_commands_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for command in _quick_start_commands():
        assert command in ci, f"README command not in .ci/run: {command}"


def test_readme_example_files_exist() -> None:
    setup = _quick_start_commands()[0]
    for token in setup.split():
        if "/" in token and not token.startswith(("./", ".venv", "out")):
            assert (ROOT / token).exists(), token
