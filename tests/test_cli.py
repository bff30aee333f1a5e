"""`edgeopt --help` is instant: it imports no framework and no subcommand module."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from edgeopt.cli import main

HEAVY = ("tensorflow", "keras", "onnx", "onnxruntime", "tf2onnx", "edgeopt.commands")


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "sys.argv = ['edgeopt', '--help']\n"
        "from edgeopt.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} "
        f"or m.startswith('edgeopt.commands')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "convert" in proc.stdout and "inspect" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_subcommands_resolve_in_process() -> None:
    result = CliRunner().invoke(main, ["targets", "list"])
    assert result.exit_code == 0, result.output
    assert "edgetpu" in result.output
    result = CliRunner().invoke(main, ["no-such-command"])
    assert result.exit_code == 2


def test_user_errors_are_one_line_exit_2() -> None:
    result = CliRunner().invoke(main, ["targets", "show", "no-such-target"])
    assert result.exit_code == 2
    assert "unknown target 'no-such-target'" in result.output
    assert "Traceback" not in result.output
