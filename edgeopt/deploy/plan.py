"""What goes where: a bundle, an artifact folder or a whole ``OUT`` folder → (device, bundle) jobs.

* a **bundle** folder (``bundle.json``) goes as it is to every device;
* an **artifact** folder (``OUT/<target>``, ``manifest.json``) is bundled first (into
  ``OUT/bundles/<name>``, so a re-run with nothing changed uploads nothing);
* an **OUT** folder of ``edgeopt convert`` (``report.json`` + ``<target>/manifest.json``) gives
  each device the artifact of its inventory ``target``.

A device whose inventory ``target`` differs from its bundle's is refused before any connection.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeopt_runtime.bundle import BUNDLE_INDEX
from edgeopt_runtime.manifest import MANIFEST_NAME

from .bundle import LocalBundle, build_bundle, open_bundle
from .inventory import Device, InventoryError


@dataclass(frozen=True)
class Plan:
    jobs: list[tuple[Device, LocalBundle]]
    bundles: dict[str, LocalBundle]
    report: Path | None  # the convert report.json to merge device results into


def _is_out_dir(p: Path) -> bool:
    return (p / "report.json").is_file() and any(p.glob(f"*/{MANIFEST_NAME}"))


def plan_jobs(
    path: str | os.PathLike[str],
    devices: list[Device],
    *,
    golden: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> Plan:
    """Decide which bundle each device gets, bundling artifacts as needed.

    Args:
        path: bundle, artifact or OUT folder.
        devices: where to deploy.
        golden: ``build_bundle`` keyword arguments (data, samples, seed, tolerance).
        log: progress lines.

    Raises:
        EdgeOptError: not a bundle / artifact / OUT folder, or a device without a matching target.
    """
    p = Path(path)
    kwargs = golden or {}
    if (p / BUNDLE_INDEX).is_file():
        bundle = open_bundle(p)
        report = _bundle_report(bundle)
        return Plan(_assign(devices, lambda d: bundle), {bundle.name: bundle}, report)
    if (p / MANIFEST_NAME).is_file():
        bundle = build_bundle(p, log=log, **kwargs)
        report = p.parent / "report.json" if (p.parent / "report.json").is_file() else None
        return Plan(_assign(devices, lambda d: bundle), {bundle.name: bundle}, report)
    if _is_out_dir(p):
        cache: dict[str, LocalBundle] = {}

        def for_device(d: Device) -> LocalBundle:
            if not d.target:
                raise InventoryError(
                    f"device {d.name!r} has no target: {p} holds several targets; set "
                    'target = "..." for it in the inventory, or pass OUT/<target>'
                )
            if d.target not in cache:
                art = p / d.target
                if not (art / MANIFEST_NAME).is_file():
                    have = sorted(x.parent.name for x in p.glob(f"*/{MANIFEST_NAME}"))
                    raise InventoryError(
                        f"device {d.name!r} is for target {d.target!r}, but {p} has no "
                        f"{d.target}/ artifact (it has {', '.join(have)})"
                    )
                cache[d.target] = build_bundle(art, log=log, **kwargs)
            return cache[d.target]

        jobs = _assign(devices, for_device)
        return Plan(jobs, {b.name: b for _, b in jobs}, p / "report.json")
    raise InventoryError(
        f"{p}: not a bundle ({BUNDLE_INDEX}), an artifact folder ({MANIFEST_NAME}) or an "
        "edgeopt convert output folder (report.json + <target>/manifest.json)"
    )


def _assign(devices: list[Device], pick: Callable[[Device], LocalBundle]) -> list:
    jobs = []
    for d in devices:
        bundle = pick(d)
        if d.target and bundle.target and d.target != bundle.target:
            raise InventoryError(
                f"device {d.name!r} is for target {d.target!r}, but the bundle {bundle.name} is "
                f"for {bundle.target!r}; pass the {d.target} artifact or the whole OUT folder"
            )
        jobs.append((d, bundle))
    return jobs


def _bundle_report(bundle: LocalBundle) -> Path | None:
    ref = bundle.index.data.get("host_reference") or {}
    path = Path(ref["report"]) if ref.get("report") else None
    return path if path is not None and path.is_file() else None


__all__ = ["Plan", "plan_jobs"]
