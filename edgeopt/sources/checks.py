"""Checks made on any source file or folder before a framework reads it, and its hash."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from edgeopt_runtime.errors import ModelLoadError
from edgeopt_runtime.manifest import sha256_file


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, (KeyError, IndexError)) or not text:  # str(KeyError('x')) is "'x'"
        text = f"{type(exc).__name__} {text}".strip()
    return text.splitlines()[0][:300]


def check_regular_file(p: Path) -> None:
    """A FIFO or device would block (or never end) when read: refuse anything but a file."""
    if not stat.S_ISREG(p.stat().st_mode):
        raise ModelLoadError(f"{p}: not a regular file (a pipe, socket or device)")


def sha256_tree(directory: Path) -> str:
    """Hash of a directory: every file's relative path and content hash, in sorted order."""
    h = hashlib.sha256()
    for f in sorted(p for p in directory.rglob("*") if p.is_file()):
        h.update(f.relative_to(directory).as_posix().encode())
        h.update(b"\0" + sha256_file(f).encode() + b"\n")
    return h.hexdigest()


def check_tree(directory: Path) -> None:
    """Refuse a model folder holding links or special files the loader must not follow.

    A symbolic link resolving outside the folder would let the model read any file on the
    machine; a linked directory can form a loop (endless hashing); a FIFO or device blocks the
    reader forever.

    Raises:
        ModelLoadError: naming the offending entry.
    """
    root = directory.resolve()
    for here, dirs, files in os.walk(directory, followlinks=False):
        for name in dirs + files:
            entry = Path(here, name)
            if entry.is_symlink():
                try:
                    target = entry.resolve(strict=True)
                except (OSError, RuntimeError):  # dangling link or a link loop
                    raise ModelLoadError(f"{entry}: broken or looping symbolic link") from None
                if not target.is_relative_to(root):
                    raise ModelLoadError(
                        f"{entry}: symbolic link to {target}, outside the model folder "
                        f"{directory}; refused (copy the file into the folder)"
                    )
                if target.is_dir():
                    raise ModelLoadError(f"{entry}: symbolic link to a directory; refused")
            mode = entry.stat().st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise ModelLoadError(f"{entry}: not a regular file (a pipe, socket or device)")
