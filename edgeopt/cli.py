"""The ``edgeopt`` command line: a click group whose subcommands are imported only when used.

Each subcommand lives in ``edgeopt/commands/<name>.py`` and exposes a click command named
``command``; ``edgeopt --help`` imports none of them, so it stays instant.
"""

from __future__ import annotations

import importlib
from typing import Any, NoReturn

import click

from edgeopt import signals

# name -> (module, one-line help shown by `edgeopt --help` without importing the module)
_COMMANDS: dict[str, tuple[str, str]] = {
    "bundle": ("edgeopt.commands.bundle", "Make a self-checking deploy bundle of an artifact."),
    "deploy": ("edgeopt.commands.deploy", "Push to devices over SSH, check outputs, profile."),
    "convert": (
        "edgeopt.commands.convert",
        "Calibrate and quantize a model for one or more targets.",
    ),
    "compare": (
        "edgeopt.commands.compare",
        "Compare a quantized model's outputs with its float reference.",
    ),
    "compress": ("edgeopt.commands.compress", "Prune, cluster, distill or QAT-fine-tune a model."),
    "diff": ("edgeopt.commands.diff", "Show what changed between two edgeopt reports."),
    "inspect": (
        "edgeopt.commands.inspect",
        "Pre-flight check: which ops a target runs, and why not.",
    ),
    "sweep": ("edgeopt.commands.sweep", "Run models x targets x recipes, cached, on an executor."),
    "targets": ("edgeopt.commands.targets", "List and show target profiles."),
    "tune": ("edgeopt.commands.tune", "Find the fastest artifact that meets an accuracy budget."),
}


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that subcommand runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _COMMANDS:
            return None
        return importlib.import_module(_COMMANDS[name][0]).command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # `edgeopt --help` lists the commands from the table: no subcommand module is imported.
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, short) in sorted(_COMMANDS.items())])


class _Main(LazyGroup):
    """Errors a user can cause -> one line, exit 2; SIGINT / SIGTERM at any moment -> one line,
    exit 130 / 143 (never click's "Aborted!" with exit 1; see ``edgeopt.signals``)."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            with signals.handle():
                return super().main(*args, **kwargs)
        finally:
            if not args and kwargs.get("args") is None:  # the real CLI (sys.argv), not a test
                signals.ignore_from_now()

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except signals.Interrupted as exc:
            _stopped(exc)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return self._invoke(ctx)
        except signals.Interrupted as exc:
            _stopped(exc)

    def _invoke(self, ctx: click.Context) -> object:
        # Imported here, not at the top: until the signal handlers are in place (main), the
        # process should import as little as possible (edgeopt_runtime pulls in numpy).
        from edgeopt_runtime.errors import EdgeOptError

        try:
            return super().invoke(ctx)
        except EdgeOptError as exc:
            signum = signals.received()
            if signum is not None:  # a framework turned the signal into another error
                _stopped(signals.Interrupted(signum))
            click.echo(f"edgeopt: error: {exc}", err=True)
            ctx.exit(exc.exit_code)


def _stopped(exc: signals.Interrupted) -> NoReturn:
    click.echo(f"edgeopt: {exc}", err=True)
    raise SystemExit(exc.exit_code)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgeopt")
def main() -> None:
    """edgeopt: convert float models to int8 for edge targets, and measure what you ship."""


if __name__ == "__main__":  # pragma: no cover
    main()
