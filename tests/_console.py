"""Reading a command's stderr: ``edgeopt``'s own progress lines (stage lines, step status and
"done" lines, which it prints also when stderr is not a terminal) vs the lines about a problem
(errors, warnings, anything else — a traceback, a framework's chatter)."""

from __future__ import annotations

_LABELLED = ("edgeopt: error: ", "edgeopt: warning: ")


def is_progress(line: str) -> bool:
    return line.startswith("edgeopt: ") and not line.startswith(_LABELLED)


def problem_lines(stderr: str) -> list[str]:
    """The non-empty stderr lines that are not progress lines."""
    return [ln for ln in stderr.strip().splitlines() if ln.strip() and not is_progress(ln)]
