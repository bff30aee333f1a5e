"""One deploy to one device, and many in parallel: probe → push → check → profile.

``deploy_one`` never raises for what a device or network can do wrong: the ``DeviceResult``
carries ``status`` (``ok`` / ``mismatch`` / ``corrupt`` / ``error``) and a one-line ``error``
that says what to do, so one dead board does not stop the others. Bugs still raise.

Round trips to the device, in order (each bounded by a timeout):

1. connect + authenticate (``connect_timeout``);
2. ``python -m edgeopt_runtime device --json --list <live> --list <incoming> --list <old>``:
   device facts, runtime version, delegates, and what is already there — one command;
3. the push (``push.py``: SFTP writes + one more ``device --list`` to verify sha256 there);
4. ``python -m edgeopt_runtime check <bundle> --json`` — files re-verified by the device, golden
   outputs compared;
5. ``python -m edgeopt_runtime profile <bundle> --runs N --json``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeopt_runtime.errors import EdgeOptError

from .bundle import LocalBundle
from .inventory import Device
from .push import PushResult, RemoteLayout, push_bundle
from .ssh import SSHTransport
from .transport import CommandResult, Transport, TransportError

Progress = Callable[[str, str, dict[str, Any]], None]  # (device name, event, info)
TransportFactory = Callable[[Device, "DeployOptions", list[str]], Transport]


class DeviceError(EdgeOptError):
    """The device lacks what the bundle needs (Python, edgeopt-runtime, a delegate) or failed."""


@dataclass(frozen=True)
class DeployOptions:
    """How to deploy (the CLI's options)."""

    runs: int = 100
    warmup: int = 10
    threads: int | None = None  # None: the manifest's (what a device app gets)
    profile: bool = True
    connect_timeout: float = 15.0
    command_timeout: float = 300.0
    io_timeout: float = 60.0
    trust_new_host: bool = False
    require_accelerator: bool = False
    chunk_size: int = 256 << 10


@dataclass
class DeviceResult:
    """What happened on one device."""

    device: Device
    bundle: str
    status: str = "error"
    error: str | None = None
    error_kind: str | None = None
    facts: dict[str, Any] | None = None
    push: PushResult | None = None
    check: dict[str, Any] | None = None
    profile: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)

    @property
    def measured_on(self) -> str:
        return self.device.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device.to_dict(),
            "measured_on": self.measured_on,
            "bundle": self.bundle,
            "status": self.status,
            "error": self.error,
            "error_kind": self.error_kind,
            "facts": self.facts,
            "push": self.push.to_dict() if self.push else None,
            "check": self.check,
            "profile": self.profile,
            "notes": self.notes,
            "timing": {k: round(v, 3) for k, v in self.timing.items()},
        }


def ssh_factory(device: Device, options: DeployOptions, notes: list[str]) -> Transport:
    return SSHTransport(
        device.ssh_target(trust_new_host=options.trust_new_host),
        connect_timeout=options.connect_timeout,
        io_timeout=options.io_timeout,
        chunk_size=options.chunk_size,
        notes=notes,
    )


# -- versions and diagnosis --------------------------------------------------------------------
def version_tuple(text: str) -> tuple[int, ...]:
    """Leading numeric release parts: ``"0.2.1rc1"`` → ``(0, 2, 1)``."""
    parts = []
    for piece in str(text).split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(piece):
            break
    return tuple(parts)


def _install_hint(python: str, need: str) -> str:
    return f"`{python} -m pip install 'edgeopt-runtime>={need}'` on the device"


def diagnose_probe(result: CommandResult, python: str, need: str) -> DeviceError:
    """Turn a failed ``edgeopt_runtime device`` run into a message that says the fix."""
    err = result.stderr.decode("utf-8", "replace")
    if result.exit_status == 127 or ("not found" in err and python in err):
        return DeviceError(
            f'Python {python!r} not found on the device: set python = "/path/to/python" for '
            "this device (inventory) or pass --python"
        )
    if "No module named edgeopt_runtime" in err or "No module named 'edgeopt_runtime'" in err:
        return DeviceError(
            f"edgeopt-runtime is not installed for {python} on the device: run "
            f"{_install_hint(python, need)} (numpy, ai-edge-litert, onnxruntime; no TensorFlow)"
        )
    if "invalid choice: 'device'" in err:
        return DeviceError(
            f"edgeopt-runtime on the device is too old (it has no `device` command; this bundle "
            f"needs >= {need}): run `{python} -m pip install -U 'edgeopt-runtime>={need}'`"
        )
    return DeviceError(
        f"`{python} -m edgeopt_runtime device` failed on the device (exit "
        f"{result.exit_status}): {result.stderr_tail() or 'no message'}"
    )


def parse_json(result: CommandResult, schema: str, what: str) -> dict[str, Any]:
    """The one JSON document a runtime command printed, checked for its schema."""
    text = result.stdout.decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text.splitlines()[-1] if text else "")
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or doc.get("schema") != schema:
        detail = result.stderr_tail() or text[:200] or "no output"
        raise DeviceError(f"{what} on the device failed (exit {result.exit_status}): {detail}")
    return doc


# -- one device --------------------------------------------------------------------------------
class _Session:
    def __init__(
        self,
        t: Transport,
        device: Device,
        bundle: LocalBundle,
        options: DeployOptions,
        res: DeviceResult,
        emit: Progress,
    ) -> None:
        self.t, self.device, self.bundle, self.options = t, device, bundle, options
        self.res, self.emit = res, emit

    def say(self, event: str, **info: Any) -> None:
        self.emit(self.device.name, event, info)

    async def runtime(self, args: Sequence[str], timeout: float | None = None) -> CommandResult:
        argv = [self.device.python, "-m", "edgeopt_runtime", *args]
        return await self.t.run(argv, timeout=timeout or self.options.command_timeout)

    async def listings(self, paths: list[str], facts: bool = False) -> dict[str, dict[str, Any]]:
        """sha256 etc. of what is in ``paths`` on the device (and the device facts with
        ``facts``: they cost an ONNX Runtime import there, so only the first probe asks)."""
        args = ["device", "--json", *([] if facts else ["--only-list"])]
        for p in paths:
            args += ["--list", p]
        result = await self.runtime(args)
        if not result.ok:
            raise diagnose_probe(result, self.device.python, self._need())
        doc = parse_json(result, "edgeopt.device/1", "`edgeopt_runtime device`")
        if facts:
            self.res.facts = {k: v for k, v in doc.items() if k != "listings"}
        return doc.get("listings") or {}

    def _need(self) -> str:
        return self.bundle.index.requires_runtime or "0.1.0"

    def check_versions(self) -> None:
        facts = self.res.facts or {}
        have, need = str(facts.get("edgeopt_runtime", "0")), self._need()
        if version_tuple(have) < version_tuple(need):
            raise DeviceError(
                f"edgeopt-runtime {have} on the device is too old for this bundle (needs >= "
                f"{need}): run `{self.device.python} -m pip install -U 'edgeopt-runtime>={need}'`"
            )
        delegates = facts.get("delegates") or {}
        wanted = (
            (self.bundle.index.data.get("source") or {}).get("runtime", {}).get("tflite_delegate")
        )
        info = delegates.get(wanted) if wanted in ("edgetpu", "gpu") else None
        if info is not None and not info.get("available"):
            msg = (
                f"the device has no {info.get('library')} for the {wanted} delegate this target "
                f"uses: {info.get('fix')}"
            )
            if self.options.require_accelerator:
                raise DeviceError(msg + " (--require-accelerator)")
            self.res.notes.append(msg + "; checked and profiled on the device CPU instead")

    async def run(self) -> None:
        opts, t, res = self.options, self.t, self.res
        clock = time.perf_counter
        t0 = clock()
        self.say("connect", url=t.url)
        await t.open()
        res.timing["connect_s"] = clock() - t0
        root = self.device.remote_dir
        await t.makedirs(root)
        layout = RemoteLayout(await t.realpath(root), self.bundle.name)
        t1 = clock()
        listings = await self.listings([layout.live, layout.incoming, layout.old], facts=True)
        self.check_versions()
        res.timing["probe_s"] = clock() - t1
        self.say("device", facts=res.facts)
        t2 = clock()
        res.push = await push_bundle(
            t,
            self.bundle,
            layout,
            listings,
            self.listings,
            events=lambda kind, info: self.say(kind, **info),
        )
        res.timing["push_s"] = clock() - t2
        self.say("pushed", push=res.push.to_dict())
        t3 = clock()
        threads = ["--threads", str(opts.threads)] if opts.threads else []
        result = await self.runtime(["check", layout.live, "--json", *threads])
        res.check = parse_json(result, "edgeopt.check/1", "`edgeopt_runtime check`")
        res.timing["check_s"] = clock() - t3
        self.say("checked", check=res.check)
        res.status = {"passed": "ok", "mismatch": "mismatch", "corrupt": "corrupt"}.get(
            res.check["status"], "error"
        )
        if res.status == "error":
            res.error = res.check.get("summary")
            res.error_kind = "check"
        if opts.profile and res.status in ("ok", "mismatch"):
            t4 = clock()
            self.say("profile", runs=opts.runs)
            args = [
                "profile",
                layout.live,
                "--runs",
                str(opts.runs),
                "--warmup",
                str(opts.warmup),
                "--json",
                *threads,
            ]
            result = await self.runtime(args)
            res.profile = parse_json(result, "edgeopt.profile/1", "`edgeopt_runtime profile`")
            res.timing["profile_s"] = clock() - t4
            self._accelerator_note(res.profile)

    def _accelerator_note(self, profile: dict[str, Any]) -> None:
        wanted = (
            (self.bundle.index.data.get("source") or {}).get("runtime", {}).get("tflite_delegate")
        )
        used = (profile.get("runtime") or {}).get("delegate")
        if (
            wanted in ("edgetpu", "gpu")
            and used != wanted
            and not any(wanted in n for n in self.res.notes)
        ):
            self.res.notes.append(
                f"the target asks for the {wanted} delegate; the device ran "
                f"{(profile.get('model') or {}).get('file')} with {used}"
            )


async def deploy_one(
    device: Device,
    bundle: LocalBundle,
    options: DeployOptions,
    progress: Progress | None = None,
    transport_factory: TransportFactory = ssh_factory,
) -> DeviceResult:
    """Push ``bundle`` to ``device``, check and profile it there (see the module docstring)."""
    emit = progress or (lambda name, event, info: None)
    res = DeviceResult(device, bundle.name)
    res.timing["started_at"] = time.time()
    t0 = time.perf_counter()
    transport = transport_factory(device, options, res.notes)
    try:
        await _Session(transport, device, bundle, options, res, emit).run()
    except EdgeOptError as exc:
        res.status = "error"
        res.error = str(exc)
        res.error_kind = type(exc).__name__
        emit(device.name, "error", {"error": res.error})
    finally:
        await transport.close()
        res.timing["total_s"] = time.perf_counter() - t0
        res.timing["finished_at"] = time.time()
    emit(device.name, "done", {"status": res.status, "seconds": res.timing["total_s"]})
    return res


async def deploy_many(
    jobs: Sequence[tuple[Device, LocalBundle]],
    options: DeployOptions,
    progress: Progress | None = None,
    transport_factory: TransportFactory = ssh_factory,
) -> list[DeviceResult]:
    """Deploy to every device at once (one task per device); results in ``jobs`` order."""
    return list(
        await asyncio.gather(
            *(deploy_one(d, b, options, progress, transport_factory) for d, b in jobs)
        )
    )


__all__ = [
    "DeployOptions",
    "DeviceError",
    "DeviceResult",
    "TransportError",
    "deploy_many",
    "deploy_one",
    "diagnose_probe",
    "parse_json",
    "version_tuple",
]
