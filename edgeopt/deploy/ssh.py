"""SSH transport on asyncssh (why asyncssh and not paramiko: ``docs/deploy.md``).

* **Host keys** are verified against a known_hosts file (default ``~/.ssh/known_hosts``, OpenSSH
  format: hashed names, ``[host]:port``, ``@cert-authority`` and ``@revoked`` all work). An
  unknown host is refused unless ``trust_new_host`` is set; then its key is fetched, appended to
  that file and shown, like OpenSSH's ``StrictHostKeyChecking=accept-new``. A *changed* key is
  always refused.
* **Keys only**: password and keyboard-interactive authentication are switched off, so no
  password is ever asked for, typed or passed on a command line. With ``identity`` only that key
  is offered (like ``IdentitiesOnly``); without it, ssh-agent and the default ``~/.ssh/id_*``.
  ``~/.ssh/config`` is read as OpenSSH would (host aliases, ``ProxyJump``, ``User``, ...).
* **Commands** go through the remote login shell, so each argv word is quoted with
  ``shlex.join``; **file operations** go through SFTP, where paths are never parsed by a shell.
* **Timeouts**: connect + login (``connect_timeout``), every command (its ``timeout``), every
  SFTP request during a transfer (``io_timeout``), and SSH keepalives so a dead link is noticed
  even when nothing is being sent.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .transport import (
    DEFAULT_MAX_OUTPUT,
    AuthError,
    CommandResult,
    ConnectError,
    ConnectionDropped,
    HostKeyError,
    Progress,
    RemoteStat,
    RemoteTimeout,
    Transport,
    TransportError,
)

DEFAULT_PORT = 22
CHUNK = 256 << 10
KEEPALIVE_S = 15.0


@dataclass(frozen=True)
class SSHTarget:
    """Where and how to connect."""

    host: str
    port: int = DEFAULT_PORT
    user: str | None = None
    identity: Path | None = None
    known_hosts: Path | None = None  # None: ~/.ssh/known_hosts
    trust_new_host: bool = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        return f"ssh://{user}{host}:{self.port}"

    @property
    def known_hosts_path(self) -> Path:
        return self.known_hosts or Path.home() / ".ssh" / "known_hosts"


def _host_pattern(host: str, port: int) -> str:
    return host if port == DEFAULT_PORT else f"[{host}]:{port}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


class SSHTransport(Transport):
    """A ``Transport`` over one asyncssh connection with one SFTP session."""

    def __init__(
        self,
        target: SSHTarget,
        *,
        connect_timeout: float = 15.0,
        io_timeout: float = 60.0,
        chunk_size: int = CHUNK,
        notes: list[str] | None = None,
    ) -> None:
        self.target = target
        self.url = target.url
        self.connect_timeout = connect_timeout
        self.io_timeout = io_timeout
        self.chunk_size = chunk_size
        self.notes = notes if notes is not None else []  # e.g. "trusted new host key ..."
        self._conn: Any = None
        self._sftp: Any = None

    # -- connection ----------------------------------------------------------------------------
    async def open(self) -> None:
        import asyncssh

        t = self.target
        kh = t.known_hosts_path
        self._check_identity()
        if t.trust_new_host and not self._host_known(kh):
            await self._trust_on_first_use(kh)
        elif not kh.is_file():
            raise HostKeyError(
                f"{self.url}: no known_hosts file {kh}: add the device's host key to it "
                f"(`ssh-keyscan -p {t.port} {t.host} >> {kh}` after checking the fingerprint), "
                "or pass --trust-new-host to accept it on first use"
            )
        options: dict[str, Any] = {
            "port": t.port,
            "known_hosts": str(kh),
            "connect_timeout": self.connect_timeout,
            "login_timeout": self.connect_timeout,
            "keepalive_interval": KEEPALIVE_S,
            "keepalive_count_max": 3,
            "password_auth": False,
            "kbdint_auth": False,
            "gss_auth": False,
            "gss_kex": False,
        }
        if t.user:
            options["username"] = t.user
        if t.identity is not None:
            options["client_keys"] = [str(t.identity)]
            options["agent_path"] = None
        try:
            self._conn = await asyncio.wait_for(
                asyncssh.connect(t.host, **options), self.connect_timeout + 5
            )
            self._sftp = await asyncio.wait_for(
                self._conn.start_sftp_client(), self.connect_timeout
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            await self.close()
            raise self._host_key_error(kh, exc) from None
        except asyncssh.PermissionDenied:
            await self.close()
            key = f"identity {t.identity}" if t.identity else "ssh-agent / ~/.ssh/id_* keys"
            raise AuthError(
                f"{self.url}: the device refused the key(s) offered ({key}) for user "
                f"{t.user or 'default'}; add the public key to ~/.ssh/authorized_keys on the "
                "device (e.g. `ssh-copy-id -i KEY.pub`); password logins are not used"
            ) from None
        except TimeoutError:
            await self.close()
            raise ConnectError(
                f"{self.url}: no SSH answer within {self.connect_timeout:g} s "
                "(device off, wrong address or port, or a firewall); --connect-timeout raises it"
            ) from None
        except (OSError, asyncssh.Error) as exc:
            await self.close()
            raise ConnectError(f"{self.url}: cannot connect: {_first_line(exc)}") from None

    async def close(self) -> None:
        sftp, conn, self._sftp, self._conn = self._sftp, self._conn, None, None
        try:
            if sftp is not None:
                sftp.exit()
            if conn is not None:
                conn.close()
                await asyncio.wait_for(conn.wait_closed(), 5)
        except Exception:  # closing a broken connection must not hide the real error
            pass

    def _check_identity(self) -> None:
        ident = self.target.identity
        if ident is None:
            return
        if not ident.is_file():
            raise AuthError(f"{self.url}: identity file {ident} not found")
        head = ident.read_bytes()[:4096]
        if b"ENCRYPTED" in head or _openssh_key_encrypted(ident):
            raise AuthError(
                f"{self.url}: identity {ident} is passphrase-protected: load it into ssh-agent "
                "(`ssh-add KEY`) and leave --identity out; edgeopt never asks for passphrases"
            )

    def _host_known(self, kh: Path) -> bool:
        return bool(self._known_entries(kh))

    def _known_entries(self, kh: Path) -> list[Any]:
        import asyncssh

        if not kh.is_file():
            return []
        try:
            found = asyncssh.read_known_hosts(str(kh)).match(
                self.target.host, self.target.host, self.target.port
            )
        except (OSError, ValueError) as exc:
            raise HostKeyError(f"{kh}: cannot read known_hosts: {_first_line(exc)}") from None
        host_keys, ca_keys = found[0], found[1]
        return [*host_keys, *ca_keys]

    def _host_key_error(self, kh: Path, exc: BaseException) -> HostKeyError:
        t = self.target
        pattern = _host_pattern(t.host, t.port)
        if self._known_entries(kh):
            return HostKeyError(
                f"{self.url}: the device's host key does NOT match {kh} (changed key: the device "
                "was reinstalled, or someone is in between); if you know why, remove the old "
                f"entry with `ssh-keygen -R '{pattern}' -f {kh}` and connect again"
            )
        return HostKeyError(
            f"{self.url}: host key not in {kh} ({_first_line(exc)}); add it after checking the "
            f"fingerprint (`ssh-keyscan -p {t.port} {t.host} >> {kh}`), or pass "
            "--trust-new-host to accept it on first use"
        )

    async def _trust_on_first_use(self, kh: Path) -> None:
        import asyncssh

        t = self.target
        try:
            key = await asyncio.wait_for(
                asyncssh.get_server_host_key(t.host, t.port, config=None), self.connect_timeout
            )
        except TimeoutError:
            raise ConnectError(
                f"{self.url}: no SSH answer within {self.connect_timeout:g} s"
            ) from None
        except (OSError, asyncssh.Error) as exc:
            raise ConnectError(f"{self.url}: cannot connect: {_first_line(exc)}") from None
        if key is None:
            raise HostKeyError(f"{self.url}: the server presented no host key")
        line = f"{_host_pattern(t.host, t.port)} {key.export_public_key().decode().strip()}\n"
        kh.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(kh, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="ascii") as f:
            f.write(line)
        self.notes.append(
            f"trusted new host key {key.get_algorithm()} {key.get_fingerprint()} of {self.url} "
            f"(added to {kh})"
        )

    # -- commands ------------------------------------------------------------------------------
    async def run(
        self, argv: Sequence[str], *, timeout: float, max_output: int = DEFAULT_MAX_OUTPUT
    ) -> CommandResult:
        import asyncssh

        conn = self._require()
        command = shlex.join(argv)
        t0 = time.perf_counter()
        proc = None
        try:
            proc = await asyncio.wait_for(
                conn.create_process(command, encoding=None, stdin=asyncssh.DEVNULL), timeout
            )
            out, err = await asyncio.wait_for(
                asyncio.gather(
                    _read_bounded(proc.stdout, max_output, argv[0]),
                    _read_bounded(proc.stderr, max_output, argv[0]),
                ),
                timeout,
            )
            await asyncio.wait_for(proc.wait_closed(), timeout)
        except TimeoutError:
            self._kill(proc)
            raise RemoteTimeout(
                f"{self.url}: `{_short(command)}` did not finish within {timeout:g} s "
                "(--command-timeout raises it)"
            ) from None
        except _lost_errors() as exc:
            raise ConnectionDropped(
                f"{self.url}: connection lost while running `{_short(command)}`: {_first_line(exc)}"
            ) from None
        except asyncssh.ChannelOpenError as exc:
            raise TransportError(
                f"{self.url}: cannot start a command: {_first_line(exc)}"
            ) from None
        return CommandResult(
            tuple(argv),
            proc.exit_status if proc.exit_signal is None else None,
            out,
            err,
            proc.exit_signal[0] if proc.exit_signal else None,
            time.perf_counter() - t0,
        )

    @staticmethod
    def _kill(proc: Any) -> None:
        if proc is None:
            return
        try:  # OpenSSH >= 7.9 forwards signals; closing the channel is the fallback
            proc.send_signal("KILL")
        except Exception:
            pass
        proc.close()

    def _require(self) -> Any:
        if self._conn is None or self._sftp is None:
            raise ConnectionDropped(f"{self.url}: not connected")
        return self._conn

    # -- files ---------------------------------------------------------------------------------
    async def _sftp_call(self, what: str, path: str, coro: Any) -> Any:
        import asyncssh

        self._require()
        try:
            return await asyncio.wait_for(coro, self.io_timeout)
        except TimeoutError:
            raise RemoteTimeout(
                f"{self.url}: {what} {path!r}: no answer within {self.io_timeout:g} s"
            ) from None
        except _lost_errors() as exc:
            raise ConnectionDropped(
                f"{self.url}: connection lost during {what} {path!r}: {_first_line(exc)}"
            ) from None
        except asyncssh.SFTPError as exc:
            raise TransportError(f"{self.url}: {what} {path!r} failed: {exc.reason}") from None

    async def lstat(self, path: str) -> RemoteStat | None:
        import asyncssh

        try:
            attrs = await self._sftp_call("lstat", path, self._sftp.lstat(path))
        except TransportError as exc:
            if isinstance(exc.__context__, asyncssh.SFTPNoSuchFile) or "No such file" in str(exc):
                return None
            raise
        kinds = {
            asyncssh.FILEXFER_TYPE_REGULAR: "file",
            asyncssh.FILEXFER_TYPE_DIRECTORY: "directory",
            asyncssh.FILEXFER_TYPE_SYMLINK: "symlink",
        }
        return RemoteStat(kinds.get(attrs.type, "other"), int(attrs.size or 0))

    async def realpath(self, path: str) -> str:
        return str(await self._sftp_call("realpath", path, self._sftp.realpath(path)))

    async def makedirs(self, path: str) -> None:
        await self._sftp_call("mkdir", path, self._sftp.makedirs(path, exist_ok=True))

    async def write_file(
        self, local: Path, remote: str, *, offset: int = 0, progress: Progress | None = None
    ) -> int:
        mode = "r+b" if offset else "wb"
        sent = 0
        f = await self._sftp_call("open", remote, self._sftp.open(remote, mode, encoding=None))
        try:
            with open(local, "rb") as src:
                src.seek(offset)
                position = offset
                while block := src.read(self.chunk_size):
                    await self._sftp_call("write", remote, f.write(block, position))
                    position += len(block)
                    sent += len(block)
                    if progress is not None:
                        progress(position)
        finally:
            try:
                await asyncio.wait_for(f.close(), self.io_timeout)
            except Exception:  # the connection is gone; the caller reports the real error
                pass
        return sent

    async def rename(self, src: str, dst: str) -> None:
        await self._sftp_call("rename", src, self._sftp.posix_rename(src, dst))

    async def remove(self, path: str) -> None:
        if await self.lstat(path) is None:
            return
        await self._sftp_call("remove", path, self._sftp.remove(path))

    async def remove_tree(self, path: str) -> None:
        st = await self.lstat(path)
        if st is None:
            return
        if st.kind != "directory":
            await self.remove(path)
            return
        await self._sftp_call("remove", path, self._sftp.rmtree(path))

    async def link(self, src: str, dst: str) -> bool:
        import asyncssh

        try:
            await self._sftp_call("link", dst, self._sftp.link(src, dst))
        except TransportError as exc:
            if isinstance(exc.__context__, asyncssh.SFTPOpUnsupported):
                return False
            raise
        return True


def _lost_errors() -> tuple[type[BaseException], ...]:
    """Every way asyncssh and the OS say the link went away (asyncssh is imported lazily)."""
    import asyncssh

    return (
        asyncssh.ConnectionLost,
        asyncssh.DisconnectError,
        asyncssh.SFTPConnectionLost,
        asyncssh.SFTPNoConnection,
        BrokenPipeError,
        ConnectionError,
    )


async def _read_bounded(stream: Any, limit: int, what: str) -> bytes:
    chunks, size = [], 0
    while True:
        block = await stream.read(1 << 16)
        if not block:
            return b"".join(chunks)
        size += len(block)
        if size > limit:
            raise TransportError(f"`{what}` printed more than {limit} bytes; refusing the rest")
        chunks.append(block)


def _short(command: str, width: int = 120) -> str:
    return command if len(command) <= width else command[: width - 1] + "…"


def _openssh_key_encrypted(path: Path) -> bool:
    """True for an OpenSSH-format private key with a cipher other than ``none``."""
    import base64

    text = path.read_text(encoding="ascii", errors="replace")
    begin, end = "-----BEGIN OPENSSH PRIVATE KEY-----", "-----END OPENSSH PRIVATE KEY-----"
    if begin not in text or end not in text:
        return False
    body = text.split(begin, 1)[1].split(end, 1)[0]
    try:
        raw = base64.b64decode("".join(body.split()))
    except ValueError:
        return False
    magic = b"openssh-key-v1\0"
    if not raw.startswith(magic) or len(raw) < len(magic) + 4:
        return False
    n = int.from_bytes(raw[len(magic) : len(magic) + 4], "big")
    return raw[len(magic) + 4 : len(magic) + 4 + n] != b"none"


__all__ = ["DEFAULT_PORT", "SSHTarget", "SSHTransport"]
