"""``edgeopt.signals``: a signal that lands in a finalizer is recorded, not lost in a traceback;
the real CLI process ignores signals once its work is over."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap


def _child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60)


def test_sigint_inside_a_finalizer_is_recorded_and_raised_at_the_next_check() -> None:
    done = _child("""
        import gc, os, signal, time
        from edgeopt import signals
        from edgeopt.output import Staging
        from pathlib import Path
        import tempfile

        class Framework:  # a library object whose __del__ runs when the signal comes
            def __del__(self):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)

        with signals.handle():
            Framework(); gc.collect()
            print("recorded", signals.received())
            out = Path(tempfile.mkdtemp()) / "out"
            try:
                with Staging(out) as stage:
                    stage.check()
            except signals.Interrupted as exc:
                print("raised", exc.signum, out.exists())
    """)
    assert "Traceback" not in done.stderr, done.stderr
    assert "Exception ignored" not in done.stderr, done.stderr
    assert done.stdout.split("\n")[:2] == [f"recorded {int(signal.SIGINT)}",
                                           f"raised {int(signal.SIGINT)} False"], done.stdout


def test_sigint_outside_a_finalizer_still_raises_at_once() -> None:
    done = _child("""
        import os, signal, time
        from edgeopt import signals
        with signals.handle():
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
                print("not interrupted")
            except signals.Interrupted as exc:
                print("raised", exc.exit_code)
    """)
    assert done.stdout.strip() == "raised 130", (done.stdout, done.stderr)


def test_the_cli_process_ignores_sigint_once_its_work_is_over() -> None:
    # After main() returns (work done, OUT committed), interpreter shutdown must not die of
    # the signal (exit -2) or print a traceback.
    done = _child("""
        import os, signal, sys
        from edgeopt.cli import main
        sys.argv = ["edgeopt", "targets", "list"]
        try:
            main()
        except SystemExit as exc:
            print("exit", exc.code, file=sys.stderr)
        os.kill(os.getpid(), signal.SIGINT)
        print("still alive", file=sys.stderr)
    """)
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert "still alive" in done.stderr and "Traceback" not in done.stderr, done.stderr
