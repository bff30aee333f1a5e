"""Reading untrusted files: regular files only, opened without blocking, read with a size cap.

A path handed to the runtime may be a FIFO (``open`` blocks forever), a character device
(``/dev/zero``: reading it "whole" exhausts memory), a link out of an artifact directory, or a
file far larger than any model. ``read_capped`` refuses all of these in one line before reading
a byte of data:

* ``os.open(O_RDONLY | O_NONBLOCK)``: opening a FIFO without a writer returns at once instead of
  hanging; the ``fstat`` on the opened descriptor (not the path, which could be swapped in
  between) must say "regular file";
* the size from that ``fstat`` must be within the cap, and exactly that many bytes are read (a file
  that grows while it is read is refused, not read without end);
* ``inside``: the real path (all links resolved) must stay inside that directory.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import EdgeOptError, ModelLoadError

MAX_MODEL_BYTES = 2 << 30  # flatbuffers address 2 GiB; ORT refuses protobufs over 2 GiB too
MAX_MANIFEST_BYTES = 4 << 20  # a manifest with hundreds of IO tensors is ~100 KiB

_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
    stat.S_IFLNK: "a symbolic link",
}


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def check_inside(path: Path, directory: Path, what: str, error: type[EdgeOptError]) -> None:
    """Raise unless ``path`` (links resolved) lies inside ``directory`` (links resolved)."""
    real, root = os.path.realpath(path), os.path.realpath(directory)
    if os.path.commonpath([real, root]) != root:
        raise error(f"{path}: {what} is a link that leaves its folder {directory} (to {real})")


def read_capped(
    path: str | os.PathLike[str],
    *,
    max_bytes: int,
    what: str = "file",
    inside: Path | None = None,
    error: type[EdgeOptError] = ModelLoadError,
) -> bytes:
    """Read a whole regular file whose size is at most ``max_bytes``.

    Args:
        path: the file.
        max_bytes: largest size accepted (checked before reading).
        what: what the file is, for messages ("model file", "manifest").
        inside: when given, the resolved path must lie inside this directory.
        error: the ``EdgeOptError`` subclass raised.

    Returns:
        The file's bytes.

    Raises:
        ``error``: missing, not a regular file, a link leaving ``inside``, too large, unreadable,
            or changing size while read.
    """
    p = Path(path)
    if "\x00" in str(p):
        raise error(f"{str(p)!r}: {what} path contains a NUL byte")
    if inside is not None:
        check_inside(p, inside, what, error)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{p}: {what} not found") from None
    except IsADirectoryError:
        raise error(f"{p}: is a directory, expected a {what}") from None
    except OSError as exc:
        raise error(f"{p}: cannot open {what}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{p}: {what} is {_kind(st.st_mode)}, expected a regular file")
        if st.st_size > max_bytes:
            raise error(
                f"{p}: {what} is {st.st_size:,} bytes, more than the {max_bytes:,} this runtime "
                "accepts"
            )
        return _read_exactly(fd, st.st_size, p, what, error)
    finally:
        os.close(fd)


def _read_exactly(fd: int, size: int, p: Path, what: str, error: type[EdgeOptError]) -> bytes:
    """Read ``size`` bytes (one ``read`` for files under 2 GiB: no copy), then expect EOF."""
    parts: list[bytes] = []
    got = 0
    try:
        while got < size:
            part = os.read(fd, size - got)
            if not part:
                raise error(f"{p}: {what} shrank while it was read ({got} of {size} bytes)")
            parts.append(part)
            got += len(part)
        if os.read(fd, 1):
            raise error(f"{p}: {what} grew while it was read (more than {size} bytes)")
    except BlockingIOError:
        raise error(f"{p}: {what} would block when read; expected a regular file") from None
    except OSError as exc:
        raise error(f"{p}: cannot read {what}: {exc.strerror}") from None
    if len(parts) == 1:
        return parts[0]
    return b"".join(parts)


__all__ = ["MAX_MANIFEST_BYTES", "MAX_MODEL_BYTES", "check_inside", "read_capped"]
