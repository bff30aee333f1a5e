"""Options several commands share, and the console (progress / warnings / log) they run under.

``@console_options`` adds ``-q/--quiet``, ``-v/--verbose`` and ``--log-file PATH``;
``running(...)`` installs the matching :class:`edgeopt.progress.Console` for the command's body
and writes a user error (``EdgeOptError``) in full to the log before the CLI prints it as one
line. ``@input_shape_option`` adds ``--input-shape NAME=D0,D1,...`` (repeatable).
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def console_options(f: F) -> F:
    """``-q/--quiet``, ``-v/--verbose``, ``--log-file PATH``."""
    f = click.option("--log-file", type=click.Path(path_type=Path, dir_okay=False),
                     help="Also write everything (progress, details, the converters' own "
                     "output, full error texts) to this file.")(f)
    f = click.option("-v", "--verbose", is_flag=True,
                     help="Show detail lines and the frameworks' own output on stderr.")(f)
    f = click.option("-q", "--quiet", is_flag=True,
                     help="No progress on stderr: warnings and errors only.")(f)
    return f


def input_shape_option(f: F) -> F:
    """``--input-shape NAME=1,224,224,3`` (repeatable; ``1,224,224,3`` alone for a model with
    one input)."""
    return click.option(
        "--input-shape", "input_shapes", multiple=True, metavar="NAME=D0,D1,...",
        help="Fix an input's shape (its dynamic dims), e.g. image=1,224,224,3; the name may be "
        "left out for a one-input model. Repeatable.")(f)


@contextlib.contextmanager
def running(quiet: bool, verbose: bool, log_file: Path | None) -> Iterator[Any]:
    """The command body runs under its console; a user error is logged in full first.

    Raises:
        click.UsageError: ``--quiet`` and ``--verbose`` together.
    """
    from edgeopt_runtime.errors import EdgeOptError

    from edgeopt import progress

    if quiet and verbose:
        raise click.UsageError("--quiet and --verbose exclude each other")
    level = (progress.Verbosity.QUIET if quiet else
             progress.Verbosity.VERBOSE if verbose else progress.Verbosity.NORMAL)
    console = progress.Console(verbosity=level, log_file=log_file)
    with progress.use(console):
        try:
            yield console
        except EdgeOptError as exc:
            console.log(f"error ({type(exc).__name__}): {exc}\n" + "".join(
                traceback.format_exception(exc)))
            raise


def print_warnings(console: Any, notes: Sequence[str]) -> None:
    """Every warning of a report on stderr, once each (shown-before ones are skipped)."""
    for note in notes:
        console.warn(note)


def parse_input_shapes(items: Sequence[str], specs: Sequence[Any] | None = None,
                       ) -> dict[str, tuple[int, ...]]:
    """``--input-shape`` items -> ``{name: dims}`` (checked against ``specs`` when given).

    Raises:
        InputError: malformed item, unknown input, rank or fixed-dim mismatch.
    """
    from edgeopt_runtime.spec import parse_input_shapes as parse

    return parse(items, specs, option="--input-shape")


def report_warnings(report: Mapping[str, Any]) -> list[str]:
    """The warnings of an ``edgeopt.report/1`` document: its notes, then its data warnings."""
    return [*report.get("notes", []), *(report.get("data") or {}).get("warnings", [])]
