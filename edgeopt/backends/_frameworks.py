"""Lazy, quiet imports of the heavy frameworks, and a guard that keeps their chatter off stdout.

TensorFlow, Keras and tf2onnx print progress to stdout from Python (``Saved artifact at ...``)
and log to stderr from C++. ``edgeopt convert --json`` promises one JSON document on stdout, so
every framework call that can print runs inside :func:`stdout_to_stderr`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

from edgeopt_runtime.errors import MissingDependencyError


def _quiet_env() -> None:
    # Must be set before tensorflow is first imported to silence its C++ INFO/WARNING lines.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def import_tf() -> Any:
    """Import tensorflow quietly.

    Raises:
        MissingDependencyError: tensorflow is not installed.
    """
    _quiet_env()
    try:
        with stdout_to_stderr():  # absl prints a few lines at import, before any log level
            import tensorflow as tf
    except ImportError:
        raise MissingDependencyError("tensorflow", "tensorflow", "to read TF models") from None
    tf.get_logger().setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    return tf


def import_keras() -> Any:
    """Import keras (after tensorflow, so the TF backend and quiet settings apply)."""
    import_tf()
    import keras

    return keras


def import_onnx() -> Any:
    """Import the onnx package.

    Raises:
        MissingDependencyError: onnx is not installed.
    """
    try:
        import onnx
    except ImportError:
        raise MissingDependencyError("onnx", "onnx", "to read and write ONNX models") from None
    return onnx


def import_tf2onnx() -> Any:
    """Import tf2onnx with its INFO logging silenced."""
    import_tf()
    try:
        import tf2onnx
    except ImportError:
        raise MissingDependencyError("tf2onnx", "tf2onnx", "to convert TF models to ONNX") from None
    for name in ("tf2onnx", "tf2onnx.tfonnx", "tf2onnx.optimizer", "tf2onnx.tf_utils"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return tf2onnx


@contextlib.contextmanager
def stdout_to_stderr(what: str = "a framework call") -> Iterator[None]:
    """Keep framework chatter off the user's terminal for the duration: stdout and stderr,
    Python and C level.

    TF / Keras / tf2onnx print progress to stdout (``Saved artifact at ...``) and C++ log lines
    to stderr; errors still reach us as Python exceptions. The output goes to the command's log
    file (``--log-file``; ``edgeopt.progress.framework_sink``), to the user's stderr with
    ``--verbose``, else nowhere; Python warnings raised meanwhile are logged the same way.
    ``EDGEOPT_DEBUG=1`` keeps the C-level stderr for debugging. Falls back to a Python-level
    redirect when the streams have no file descriptor (pytest capture).
    """
    from .. import progress

    sys.stdout.flush()
    sys.stderr.flush()
    debug = os.environ.get("EDGEOPT_DEBUG", "") not in ("", "0")
    sink = io.StringIO()
    caught: list[warnings.WarningMessage] = []
    try:
        with progress.framework_sink() as target, \
                warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(sink):
            warnings.simplefilter("always")
            try:
                fds = [sys.__stdout__.fileno()] + ([] if debug else [sys.__stderr__.fileno()])
            except (AttributeError, OSError, ValueError):
                yield
                return
            saved = [os.dup(fd) for fd in fds]
            dest = target if target is not None else os.open(os.devnull, os.O_WRONLY)
            try:
                for fd in fds:
                    os.dup2(dest, fd)
                yield
            finally:
                sys.stdout.flush()
                for fd, keep in zip(fds, saved, strict=True):
                    os.dup2(keep, fd)
                    os.close(keep)
                if target is None:
                    os.close(dest)
    finally:
        console = progress.current()
        if console is not None:
            said = [sink.getvalue()] + [f"{w.category.__name__}: {w.message}" for w in caught]
            console.framework_output(what, "\n".join(x for x in said if x))


def log_failure(what: str, exc: BaseException) -> None:
    """The whole text and traceback of a framework's exception, for the log file (``--log-file``,
    ``--verbose``): the one-line message the user sees keeps only its key line."""
    import traceback

    from .. import progress

    progress.log(f"{what} failed with {type(exc).__name__}:\n"
                 + "".join(traceback.format_exception(exc)).rstrip())
