"""Devices: the inventory file (TOML) and ``ssh://user@host:port`` addresses.

``devices.toml``::

    [defaults]                      # optional: applies to every device below
    user = "pi"
    identity = "~/.ssh/id_ed25519"
    python = "python3"

    [[device]]
    name = "pi4-kitchen"            # shown in reports ("measured on pi4-kitchen")
    host = "192.168.1.20"           # or an alias from ~/.ssh/config
    port = 22
    user = "pi"
    identity = "~/.ssh/id_ed25519"  # relative paths are relative to this file
    python = "/home/pi/venv/bin/python"   # the interpreter that has edgeopt-runtime
    remote_dir = "edgeopt"          # bundles live in <remote_dir>/<bundle name>; relative = $HOME
    target = "arm-cpu"              # which artifact of an OUT folder this device gets
    known_hosts = "~/.ssh/known_hosts"

Unknown keys are refused with the list of allowed ones. ``remote_dir`` may not contain ``..``
or control characters, and is never given to a shell (file operations use SFTP; commands quote
every word).
"""

from __future__ import annotations

import os
import tomllib
import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgeopt_runtime.errors import EdgeOptError

from .ssh import DEFAULT_PORT, SSHTarget

DEFAULT_PYTHON = "python3"
DEFAULT_REMOTE_DIR = "edgeopt"
_KEYS = (
    "name",
    "host",
    "port",
    "user",
    "identity",
    "python",
    "remote_dir",
    "target",
    "known_hosts",
)


class InventoryError(EdgeOptError):
    """The inventory file or a device address is invalid."""


@dataclass(frozen=True)
class Device:
    """One device to deploy to."""

    name: str
    host: str
    port: int = DEFAULT_PORT
    user: str | None = None
    identity: Path | None = None
    python: str = DEFAULT_PYTHON
    remote_dir: str = DEFAULT_REMOTE_DIR
    target: str | None = None
    known_hosts: Path | None = None

    def ssh_target(self, *, trust_new_host: bool = False) -> SSHTarget:
        return SSHTarget(
            self.host, self.port, self.user, self.identity, self.known_hosts, trust_new_host
        )

    @property
    def url(self) -> str:
        return self.ssh_target().url

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "python": self.python,
            "remote_dir": self.remote_dir,
            "target": self.target,
        }


def _printable(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise InventoryError(f"{what} must be a non-empty string, got {value!r}")
    if not value.isprintable():
        raise InventoryError(f"{what} {value!r} holds control characters")
    return value


def check_remote_dir(value: Any, what: str = "remote_dir") -> str:
    """A remote folder: absolute or relative to the login's home (``~/`` allowed), no ``..``.

    Raises:
        InventoryError: empty, control characters, ``..`` components, or the home / ``/`` itself.
    """
    text = _printable(value, what)
    if text.startswith("~/"):
        text = text[2:]
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InventoryError(f"{what} {value!r} must not contain '..'")
    if not parts or text.startswith("~"):
        raise InventoryError(
            f"{what} {value!r} must name a folder of its own (e.g. 'edgeopt' or "
            "'/opt/edgeopt'), not the home folder or '/'"
        )
    return ("/" if text.startswith("/") else "") + "/".join(parts)


def _port(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise InventoryError(f"{what} must be an integer port in [1, 65535], got {value!r}")
    return value


def _path(value: Any, what: str, base: Path) -> Path:
    p = Path(os.path.expanduser(_printable(value, what)))
    return p if p.is_absolute() else base / p


def device_from_dict(d: dict[str, Any], where: str, base: Path) -> Device:
    """Validate one ``[[device]]`` table (``base``: folder relative paths are taken from)."""
    unknown = sorted(set(d) - set(_KEYS))
    if unknown:
        raise InventoryError(f"{where}: unknown key(s) {unknown}; allowed: {', '.join(_KEYS)}")
    for key in ("name", "host"):
        if key not in d:
            raise InventoryError(f"{where}: missing '{key}'")
    target = d.get("target")
    if target is not None:
        from edgeopt_runtime.bundle import check_name

        try:
            check_name(target, "target")
        except EdgeOptError as exc:
            raise InventoryError(f"{where}: {exc}") from None
    return Device(
        name=_printable(d["name"], f"{where}: name"),
        host=_printable(d["host"], f"{where}: host"),
        port=_port(d.get("port", DEFAULT_PORT), f"{where}: port"),
        user=_printable(d["user"], f"{where}: user") if d.get("user") is not None else None,
        identity=_path(d["identity"], f"{where}: identity", base) if d.get("identity") else None,
        python=_printable(d.get("python", DEFAULT_PYTHON), f"{where}: python"),
        remote_dir=check_remote_dir(
            d.get("remote_dir", DEFAULT_REMOTE_DIR), f"{where}: remote_dir"
        ),
        target=target,
        known_hosts=_path(d["known_hosts"], f"{where}: known_hosts", base)
        if d.get("known_hosts")
        else None,
    )


def load_inventory(path: str | os.PathLike[str]) -> dict[str, Device]:
    """Read a devices TOML file.

    Returns:
        Devices by name, in file order.

    Raises:
        InventoryError: missing / invalid file, unknown keys, duplicate names.
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InventoryError(
            f"{p}: device inventory not found (write one, see docs/deploy.md, or use --to "
            "ssh://user@host)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(f"{p}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(f"{p}: invalid TOML: {exc}") from None
    extra = sorted(set(data) - {"defaults", "device"})
    if extra:
        raise InventoryError(f"{p}: unknown table(s) {extra}; expected [defaults] and [[device]]")
    defaults = data.get("defaults", {})
    tables = data.get("device", [])
    if not isinstance(defaults, dict) or not isinstance(tables, list):
        raise InventoryError(f"{p}: expected a [defaults] table and [[device]] tables")
    if not tables:
        raise InventoryError(f"{p}: no [[device]] tables")
    devices: dict[str, Device] = {}
    for i, table in enumerate(tables):
        dev = device_from_dict({**defaults, **table}, f"{p}: device[{i}]", p.parent)
        if dev.name in devices:
            raise InventoryError(f"{p}: device name {dev.name!r} is used twice")
        devices[dev.name] = dev
    return devices


def device_from_url(url: str, **overrides: Any) -> Device:
    """A device from ``ssh://[user@]host[:port]`` (the name is the address without ``ssh://``).

    Raises:
        InventoryError: not an ``ssh://`` address, or a bad port.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "ssh" or not parts.hostname or parts.path not in ("", "/"):
        raise InventoryError(
            f"--to {url!r}: expected ssh://[user@]host[:port] (no password, no path; use "
            "--remote-dir for the folder)"
        )
    if parts.password is not None:
        raise InventoryError(f"--to {url!r}: passwords are not accepted; use a key")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise InventoryError(f"--to {url!r}: bad port") from None
    user = urllib.parse.unquote(parts.username) if parts.username else None
    name = parts.netloc.rsplit("@", 1)[-1] if not user else f"{user}@{parts.netloc.rsplit('@')[-1]}"
    dev = Device(name=name, host=parts.hostname, port=port, user=user)
    return with_overrides(dev, **overrides)


def with_overrides(dev: Device, **overrides: Any) -> Device:
    """``dev`` with the given non-None fields replaced (command-line options over the file)."""
    values = {k: v for k, v in overrides.items() if v is not None}
    if "remote_dir" in values:
        values["remote_dir"] = check_remote_dir(values["remote_dir"], "--remote-dir")
    if "python" in values:
        values["python"] = _printable(values["python"], "--python")
    return replace(dev, **values)


__all__ = [
    "DEFAULT_PYTHON",
    "DEFAULT_REMOTE_DIR",
    "Device",
    "InventoryError",
    "check_remote_dir",
    "device_from_url",
    "load_inventory",
    "with_overrides",
]
