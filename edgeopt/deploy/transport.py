"""The transport interface: how ``edgeopt deploy`` reaches a device.

A transport moves files and runs commands; it knows nothing about bundles. ``push.py`` (the
resumable, verified upload) and ``session.py`` (probe → push → check → profile) are written
against this interface only, so a second transport plugs in without touching them.

Contract for an implementation:

* **Commands are argv lists**, never shell strings. A transport that has to go through a remote
  shell (SSH) quotes every word itself (``shlex.join``); callers never quote.
* **Remote paths are POSIX strings** built by the caller from validated plain names; the
  transport must not interpret them (SSH does every file operation through SFTP, so no path
  reaches a shell).
* ``rename`` replaces an existing destination *file* atomically (POSIX ``rename``);
  ``write_file`` writes bytes ``[offset:]`` of a local file into the remote file, appending from
  ``offset`` (``offset == 0`` truncates), and calls ``progress(bytes_sent_so_far)``.
* ``link`` makes a hard link and returns False when the far side cannot (the caller uploads).
* Every failure is a ``TransportError`` subclass with a one-line message that names the device
  and what to do; a lost connection is ``ConnectionDropped`` whatever the step.
* Every call that waits on the device is bounded by a timeout.

An ``adb`` transport (Android) would map ``run`` to ``adb shell`` with quoted argv, the file
calls to ``adb push`` / ``adb shell mv|rm|ln``, and could run LiteRT's ``benchmark_model`` when
the device has no Python; it is not written yet.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from edgeopt_runtime.errors import EdgeOptError

DEFAULT_MAX_OUTPUT = 32 << 20  # a profile with many runs is ~1 MB of JSON; refuse runaway output


class TransportError(EdgeOptError):
    """Talking to a device failed; the message says which device and what to do."""


class ConnectError(TransportError):
    """The device cannot be reached (refused, unknown host, timed out)."""


class HostKeyError(TransportError):
    """The device's host key is unknown or does not match known_hosts."""


class AuthError(TransportError):
    """The device refused every key offered."""


class ConnectionDropped(TransportError):
    """The connection was lost in the middle of an operation."""


class RemoteTimeout(TransportError):
    """A remote command or transfer did not finish within its timeout."""


@dataclass(frozen=True)
class CommandResult:
    """What a remote command did."""

    argv: tuple[str, ...]
    exit_status: int | None  # None when it was killed by a signal
    stdout: bytes
    stderr: bytes
    signal: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def stderr_tail(self, lines: int = 3) -> str:
        """The last non-empty stderr lines, joined, for one-line error messages."""
        text = self.stderr.decode("utf-8", "replace").strip().splitlines()
        return " | ".join(line.strip() for line in text[-lines:] if line.strip())


@dataclass(frozen=True)
class RemoteStat:
    """``lstat`` of a remote path (symlinks not followed)."""

    kind: str  # "file" | "directory" | "symlink" | "other"
    size: int


Progress = Callable[[int], None]


class Transport(ABC):
    """One open channel to one device. Use as ``async with transport: ...``."""

    #: how the device is shown in messages and reports, e.g. ``ssh://pi@10.0.0.5:22``
    url: str = ""

    async def __aenter__(self) -> Transport:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abstractmethod
    async def open(self) -> None:
        """Connect and authenticate (bounded by the connect timeout)."""

    @abstractmethod
    async def close(self) -> None:
        """Close the connection; never raises."""

    @abstractmethod
    async def run(
        self, argv: Sequence[str], *, timeout: float, max_output: int = DEFAULT_MAX_OUTPUT
    ) -> CommandResult:
        """Run ``argv`` on the device and collect its output (each stream bounded)."""

    @abstractmethod
    async def lstat(self, path: str) -> RemoteStat | None:
        """What is at ``path`` (None when nothing is)."""

    @abstractmethod
    async def realpath(self, path: str) -> str:
        """The absolute, symlink-free form of an existing ``path``."""

    @abstractmethod
    async def makedirs(self, path: str) -> None:
        """Create ``path`` and its parents (no error when it exists)."""

    @abstractmethod
    async def write_file(
        self, local: Path, remote: str, *, offset: int = 0, progress: Progress | None = None
    ) -> int:
        """Send ``local[offset:]`` into ``remote`` (appending at ``offset``); returns bytes sent."""

    @abstractmethod
    async def rename(self, src: str, dst: str) -> None:
        """Rename atomically; an existing destination file is replaced."""

    @abstractmethod
    async def remove(self, path: str) -> None:
        """Remove a file or symlink (no error when it is gone)."""

    @abstractmethod
    async def remove_tree(self, path: str) -> None:
        """Remove a directory and everything in it, never following symlinks."""

    @abstractmethod
    async def link(self, src: str, dst: str) -> bool:
        """Hard-link ``src`` to ``dst``; False when the device side cannot make hard links."""


__all__ = [
    "AuthError",
    "CommandResult",
    "ConnectError",
    "ConnectionDropped",
    "HostKeyError",
    "RemoteStat",
    "RemoteTimeout",
    "Transport",
    "TransportError",
]
