"""``edgeopt deploy PATH --to ssh://user@host[:port] | --device NAME ... [--json]``.

PATH is an artifact folder (``OUT/<target>``), a whole ``OUT`` folder (each inventory device gets
the artifact of its ``target``) or a bundle. For every device, in parallel: connect (host key
checked against known_hosts), push only the changed files of the bundle, verify their sha256 on
the device, check its edgeopt-runtime and delegates, run the golden-output check and the profiler
there, and report what was measured on which device (``edgeopt/deploy/``, ``docs/deploy.md``).

Exit codes: 0 every device ok; 1 a device's outputs differ from the build machine's or its files
were damaged; 2 a user or device error (unreachable, host key refused, runtime missing, ...),
one line per device on stderr. ``--json`` prints the ``edgeopt.deploy/1`` document either way.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import click

from edgeopt.commands.bundle import golden_options, tolerance_options


class _Progress:
    """``[device] what`` lines on stderr; on a terminal, uploads update one line in place."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._open_line = False

    def line(self, text: str) -> None:
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, name: str, event: str, info: dict[str, Any]) -> None:
        tag = f"edgeopt: [{name}]"
        if event == "upload":
            if self.tty:
                done, size = info["sent"], max(info["size"], 1)
                self.stream.write(f"\r{tag} uploading {info['file']} {done * 100 // size:3d}%")
                self.stream.flush()
                self._open_line = True
            elif info["sent"] == info["offset"]:
                resume = f", resuming at byte {info['offset']}" if info["offset"] else ""
                self.line(f"{tag} uploading {info['file']} ({info['size']} bytes{resume})")
            return
        text = {
            "connect": lambda: f"connecting to {info['url']}",
            "device": lambda: _facts_line(info["facts"]),
            "verified": lambda: f"sha256 of {info['files']} files verified on the device",
            "swapped": lambda: f"bundle in place: {info['path']}",
            "pushed": lambda: "already up to date" if info["push"]["up_to_date"] else None,
            "checked": lambda: (
                f"golden check: {info['check']['status']}: {info['check']['summary']}"
            ),
            "profile": lambda: f"profiling ({info['runs']} runs)",
            "error": lambda: f"error: {info['error']}",
            "done": lambda: f"{info['status']} in {info['seconds']:.1f} s",
        }.get(event, lambda: None)()
        if text:
            self.line(f"{tag} {text}")


def _facts_line(facts: dict[str, Any] | None) -> str:
    from edgeopt.deploy.report import compact_facts

    f = compact_facts(facts) or {}
    return (
        f"device: {f.get('os')}, {f.get('machine')}, {f.get('cpu')} x{f.get('cores')}, "
        f"edgeopt-runtime {f.get('edgeopt_runtime')}, delegates "
        f"{', '.join(f.get('delegates_available') or []) or 'none'}"
    )


def _devices(
    to: tuple[str, ...],
    names: tuple[str, ...],
    all_devices: bool,
    inventory: Path | None,
    overrides: dict[str, Any],
) -> list[Any]:
    from edgeopt.deploy.inventory import (
        InventoryError,
        device_from_url,
        load_inventory,
        with_overrides,
    )

    devices = [device_from_url(u, **overrides) for u in to]
    if names or all_devices:
        path = inventory or Path("devices.toml")
        known = load_inventory(path)
        if all_devices:
            names = tuple(known)
        for n in names:
            if n not in known:
                raise InventoryError(
                    f"{path}: no device named {n!r}; it has {', '.join(known) or 'none'}"
                )
            devices.append(with_overrides(known[n], **overrides))
    elif inventory is not None:
        raise InventoryError("--devices needs --device NAME or --all-devices")
    if not devices:
        raise InventoryError(
            "no device given: pass --to ssh://user@host[:port], or --device NAME / --all-devices "
            "with an inventory (--devices devices.toml)"
        )
    seen: set[str] = set()
    for d in devices:
        if d.name in seen:
            raise InventoryError(f"device {d.name!r} is given twice")
        seen.add(d.name)
    return devices


@click.command("deploy")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--to",
    "to",
    multiple=True,
    metavar="ssh://USER@HOST[:PORT]",
    help="A device by address (repeatable).",
)
@click.option(
    "--device",
    "names",
    multiple=True,
    metavar="NAME",
    help="A device from the inventory (repeatable).",
)
@click.option("--all-devices", is_flag=True, help="Every device of the inventory.")
@click.option(
    "--devices",
    "inventory",
    type=click.Path(path_type=Path),
    help="Inventory TOML (default ./devices.toml).",
)
@click.option(
    "--identity",
    type=click.Path(path_type=Path),
    help="Private key to offer (only this one); default: ssh-agent / ~/.ssh keys.",
)
@click.option(
    "--known-hosts",
    type=click.Path(path_type=Path),
    help="known_hosts file (default ~/.ssh/known_hosts).",
)
@click.option(
    "--trust-new-host",
    is_flag=True,
    help="Accept and record the host key of a device not yet in known_hosts "
    "(trust on first use); a changed key is still refused.",
)
@click.option("--remote-dir", help="Folder for bundles on the device (default 'edgeopt' in $HOME).")
@click.option("--python", help="Python on the device that has edgeopt-runtime (default python3).")
@click.option(
    "--runs",
    type=click.IntRange(1, 100_000),
    default=100,
    show_default=True,
    help="Timed profile runs on the device.",
)
@click.option(
    "--warmup",
    type=click.IntRange(0, 100_000),
    default=10,
    show_default=True,
    help="Warm-up runs before timing.",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 256),
    help="Interpreter threads on the device (default: the manifest's).",
)
@click.option("--no-profile", is_flag=True, help="Push and check only.")
@click.option(
    "--require-accelerator",
    is_flag=True,
    help="Fail when the device lacks the target's delegate (Edge TPU / GPU library).",
)
@click.option(
    "--connect-timeout",
    type=click.FloatRange(0.1, 600),
    default=15.0,
    show_default=True,
    help="Seconds to connect and log in.",
)
@click.option(
    "--command-timeout",
    type=click.FloatRange(1, 86_400),
    default=300.0,
    show_default=True,
    help="Seconds for each remote command.",
)
@golden_options
@click.option(
    "--report",
    "report_out",
    type=click.Path(path_type=Path),
    help="Also write the deploy document to this JSON file.",
)
@click.option("--no-merge", is_flag=True, help="Do not add the device results to OUT/report.json.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
def command(
    path: Path,
    to: tuple[str, ...],
    names: tuple[str, ...],
    all_devices: bool,
    inventory: Path | None,
    identity: Path | None,
    known_hosts: Path | None,
    trust_new_host: bool,
    remote_dir: str | None,
    python: str | None,
    runs: int,
    warmup: int,
    threads: int | None,
    no_profile: bool,
    require_accelerator: bool,
    connect_timeout: float,
    command_timeout: float,
    data: Path | None,
    samples: int,
    seed: int,
    tolerance_steps: float | None,
    tolerance_atol: float | None,
    tolerance_rtol: float | None,
    report_out: Path | None,
    no_merge: bool,
    as_json: bool,
) -> None:
    """Push PATH to devices over SSH, verify it there, check its outputs and profile it."""
    from edgeopt.deploy.plan import plan_jobs
    from edgeopt.deploy.report import deploy_document, format_text, merge_into_report
    from edgeopt.deploy.session import DeployOptions, deploy_many

    t0 = time.perf_counter()
    progress = _Progress(sys.stderr)
    overrides = {
        "identity": identity,
        "known_hosts": known_hosts,
        "remote_dir": remote_dir,
        "python": python,
    }
    devices = _devices(to, names, all_devices, inventory, overrides)
    golden = {
        "data": data,
        "samples": samples,
        "seed": seed,
        "tolerance": tolerance_options(tolerance_steps, tolerance_atol, tolerance_rtol),
    }
    plan = plan_jobs(
        path, devices, golden=golden, log=lambda line: progress.line(f"edgeopt: {line}")
    )
    options = DeployOptions(
        runs=runs,
        warmup=warmup,
        threads=threads,
        profile=not no_profile,
        connect_timeout=connect_timeout,
        command_timeout=command_timeout,
        trust_new_host=trust_new_host,
        require_accelerator=require_accelerator,
    )
    results = asyncio.run(deploy_many(plan.jobs, options, progress))
    doc = deploy_document(results, plan.bundles, time.perf_counter() - t0)
    if plan.report is not None and not no_merge:
        merged = merge_into_report(plan.report, doc, plan.bundles)
        if merged:
            doc["merged_into"] = str(plan.report)
            progress.line(f"edgeopt: device results added to {plan.report} ({', '.join(merged)})")
    if report_out is not None:
        report_out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    if as_json:
        sys.stdout.write(json.dumps(doc) + "\n")
    else:
        click.echo(format_text(doc))
    errors = [r for r in results if r.status == "error"]
    for r in errors:
        click.echo(f"edgeopt: error: device {r.device.name!r}: {r.error}", err=True)
    if errors:
        sys.exit(2)
    if any(r.status in ("mismatch", "corrupt") for r in results):
        sys.exit(1)
