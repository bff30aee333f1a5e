"""Error hierarchy shared by the runtime and the converter.

Every error a user can cause (bad file, bad input, missing library) is an ``EdgeOptError``.
The CLIs turn these into one line on stderr and exit code 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


class EdgeOptError(Exception):
    """Base class of every user-facing edgeopt error."""

    exit_code = 2


class ModelLoadError(EdgeOptError):
    """A model file or artifact directory cannot be read, is corrupt, or is the wrong kind."""


class InputError(EdgeOptError):
    """Feeds given to ``Model.run`` do not match the model's input signature."""


class CalibrationError(EdgeOptError):
    """Calibration / validation data is missing, malformed or does not fit the model."""


class TargetError(EdgeOptError):
    """A target profile is unknown or invalid."""


class UnsupportedOpError(EdgeOptError):
    """The model holds an op the chosen target or backend cannot run."""


class DelegateError(EdgeOptError):
    """A delegate / execution provider library cannot be loaded."""


class MissingDependencyError(EdgeOptError):
    """An optional dependency is not installed; the message names the pip command that fixes it."""

    def __init__(self, what: str, pip_name: str, purpose: str = "") -> None:
        extra = f" ({purpose})" if purpose else ""
        super().__init__(f"{what} is not installed{extra}: run `pip install {pip_name}`")
        self.pip_name = pip_name
