"""The post-build step interface: something an accelerator runs on a built model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping

    from edgeopt_runtime.manifest import ModelEntry

    from edgeopt.report.blocks import Block


@dataclass(frozen=True)
class PostBuildOutcome:
    """What a post-build step did: its report block, a manifest entry to add, a note."""

    block: dict[str, Any]
    entry: ModelEntry | None = None
    note: str | None = None


class PostBuild(Protocol):
    """A step run on a built model for its accelerator (e.g. ``edgetpu_compiler``).

    ``key`` is the artifact's JSON key of the step's block; the step also says what its block
    means: the ``--strict`` gate, the report blocks and the terminal lines.
    """

    key: str

    def applies(self, fmt: str, precision: str) -> bool:
        """Whether this built model (format, precision) goes through the step."""
        ...

    def run(self, model: Path, tdir: Path, plain: ModelEntry,
            prediction: dict[str, Any] | None) -> PostBuildOutcome:
        """Run the step on ``model`` in target folder ``tdir``; never raises for a failed
        tool (the outcome says so)."""
        ...

    def progress(self, model: Path) -> str:
        """The progress line shown before the step runs."""
        ...

    def gate(self, label: str, block: Mapping[str, Any]) -> dict[str, Any] | None:
        """The ``--strict`` gate body from the block (None: the step did not run)."""
        ...

    def blocks(self, block: Mapping[str, Any]) -> list[Block]:
        """The report's description of the block."""
        ...

    def summary_lines(self, block: Mapping[str, Any]) -> list[str]:
        """The terminal's description of the block."""
        ...
