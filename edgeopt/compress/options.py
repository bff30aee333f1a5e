"""What ``edgeopt compress`` is asked to do, as one validated value.

``CompressOptions`` is a frozen dataclass whose field names appear verbatim in the report's
``settings`` block, so a report says exactly which steps ran. Validation happens once, before
any model or data is read, and every refusal is one line naming the option and the range.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from edgeopt_runtime.errors import EdgeOptError


class CompressOptionError(EdgeOptError):
    """A compress option is out of range or the combination cannot work."""


DEFAULT_EPOCHS = 2


class Criterion(StrEnum):
    """How filters / units are ranked for structured (channel) pruning."""

    AUTO = "auto"  # taylor when the data has labels, else l1 (chosen by measurement)
    L1 = "l1"  # sum of |w| of the filter
    L2 = "l2"  # Euclidean norm of the filter
    TAYLOR = "taylor"  # first-order Taylor: (sum_w g*w)^2 over the filter, on training data


class DistillLoss(StrEnum):
    """What the student matches of the teacher's output."""

    AUTO = "auto"  # KL for class scores (probabilities / logits), MSE otherwise
    KL = "kl"  # KL divergence of temperature-softened distributions
    MSE = "mse"  # mean squared error (embeddings, regression)


@dataclass(frozen=True)
class CompressOptions:
    """The compression steps and fine-tuning settings.

    Steps run in this order: channel pruning, magnitude pruning, clustering, QAT; fine-tuning
    (``epochs`` > 0) happens once with every requested constraint held (masks, shared weights,
    fake quantization), distilled from the float original when ``distill``.
    """

    prune: float | None = None  # target fraction of zero weights per prunable kernel
    prune_channels: float | None = None  # fraction of filters / units removed per layer
    cluster: int | None = None  # number of shared values per kernel
    distill: bool = False
    qat: bool = False
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = 32
    learning_rate: float = 1e-3
    temperature: float = 4.0
    distill_alpha: float = 0.5  # weight of the hard-label loss next to the distillation loss
    distill_loss: DistillLoss = DistillLoss.AUTO
    criterion: Criterion = Criterion.AUTO
    prune_first: bool = False  # also prune the layer(s) reading the model input
    seed: int = 0

    def __post_init__(self) -> None:
        # the enums may be given by value ("taylor"), as in TOML / JSON / the CLI
        object.__setattr__(self, "criterion", parse_enum(Criterion, "--criterion",
                                                         self.criterion))
        object.__setattr__(self, "distill_loss", parse_enum(DistillLoss, "--distill-loss",
                                                            self.distill_loss))
        self.validate()

    @property
    def steps(self) -> list[str]:
        """Names of the requested steps, in the order they run."""
        out = []
        if self.prune_channels is not None:
            out.append("prune_channels")
        if self.prune is not None:
            out.append("prune")
        if self.cluster is not None:
            out.append("cluster")
        if self.qat:
            out.append("qat")
        if self.distill:
            out.append("distill")
        return out

    @property
    def fine_tunes(self) -> bool:
        return self.epochs > 0

    def validate(self) -> None:
        """Raises CompressOptionError on the first value out of range."""
        _fraction("--prune", self.prune)
        _fraction("--prune-channels", self.prune_channels)
        if self.cluster is not None and (not isinstance(self.cluster, int) or self.cluster < 2):
            raise CompressOptionError(
                f"--cluster must be an integer >= 2 (number of shared weight values per layer), "
                f"got {self.cluster}"
            )
        if self.cluster is not None and self.cluster > 65536:
            raise CompressOptionError(
                f"--cluster {self.cluster} is more values than int8/int16 weights can hold; "
                "use 2..256 (16 is a good start)"
            )
        if self.epochs < 0:
            raise CompressOptionError(f"--epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise CompressOptionError(f"--batch-size must be >= 1, got {self.batch_size}")
        for name, value in (("--learning-rate", self.learning_rate),
                            ("--temperature", self.temperature)):
            if not (math.isfinite(value) and value > 0):
                raise CompressOptionError(f"{name} must be a positive number, got {value}")
        if not (0.0 <= self.distill_alpha <= 1.0):
            raise CompressOptionError(f"distill_alpha must be in [0, 1], got {self.distill_alpha}")
        if not self.steps:
            raise CompressOptionError(
                "nothing to do: pass at least one of --prune, --prune-channels, --cluster, "
                "--distill, --qat"
            )
        if self.distill and not self.fine_tunes:
            raise CompressOptionError("--distill needs fine-tuning: pass --epochs N with N >= 1")
        if self.qat and not self.fine_tunes:
            raise CompressOptionError("--qat needs fine-tuning: pass --epochs N with N >= 1")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["criterion"] = self.criterion.value
        d["distill_loss"] = self.distill_loss.value
        d["steps"] = self.steps
        return d


def _fraction(name: str, value: float | None) -> None:
    if value is None:
        return
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value < 1.0):
        raise CompressOptionError(
            f"{name} must be a fraction in [0, 1) (e.g. 0.5 for half), got {value}"
        )


def parse_enum(enum: type[StrEnum], option: str, value: str) -> Any:
    """``enum(value)`` with a one-line error listing the allowed values."""
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(e.value for e in enum)
        raise CompressOptionError(f"{option} {value!r} is not one of {allowed}") from None
