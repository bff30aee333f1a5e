"""The deploy report (``edgeopt.deploy/1``), its text form, and the merge into ``report.json``.

``edgeopt deploy --json`` prints one document::

    {"schema": "edgeopt.deploy/1", "created": "...", "wall_seconds": 9.1,
     "summary": {"ok": 2, "mismatch": 0, "corrupt": 0, "error": 0},
     "bundles": {"digits_cnn-arm-cpu": {"path", "target", "files", "bytes", "index_sha256",
                                         "host_reference"}},
     "devices": [{"device": {...}, "measured_on": "pi4", "status": "ok", "error": null,
                  "facts": edgeopt.device/1, "push": {...}, "check": edgeopt.check/1,
                  "profile": edgeopt.profile/1, "vs_host": {...} | null, "notes": [...],
                  "timing": {"connect_s", "probe_s", "push_s", "check_s", "profile_s",
                             "total_s", "started_at", "finished_at"}}]}

When the artifact came from ``edgeopt convert`` (``OUT/report.json`` next to it), each device's
result is also written into that report, under the target's entry, as
``"device_runs": [{"device": "pi4", "measured_on": "pi4", "facts": {...}, "latency": {...},
"check": {...}, "vs_host": {...}, ...}]`` (one entry per device name, replaced on re-runs). The
report schema allows new optional fields, so every reader of ``edgeopt.report/1`` keeps working.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

from .bundle import LocalBundle
from .session import DeviceResult

DEPLOY_SCHEMA = "edgeopt.deploy/1"
STATUSES = ("ok", "mismatch", "corrupt", "error")


def compact_facts(facts: dict[str, Any] | None) -> dict[str, Any] | None:
    """The device facts a report row needs."""
    if not facts:
        return None
    delegates = facts.get("delegates") or {}
    return {
        "hostname": facts.get("hostname"),
        "kernel": (facts.get("kernel") or {}).get("release"),
        "os": facts.get("os"),
        "machine": facts.get("machine"),
        "cpu": (facts.get("cpu") or {}).get("model"),
        "cores": (facts.get("cpu") or {}).get("cores"),
        "memory_total_bytes": (facts.get("memory") or {}).get("total_bytes"),
        "python": (facts.get("python") or {}).get("version"),
        "edgeopt_runtime": facts.get("edgeopt_runtime"),
        "packages": facts.get("packages"),
        "delegates_available": [
            k for k in ("xnnpack", "edgetpu", "gpu") if (delegates.get(k) or {}).get("available")
        ],
        "onnx_providers": (delegates.get("onnxruntime") or {}).get("providers"),
    }


def vs_host(r: DeviceResult, bundle: LocalBundle) -> dict[str, Any] | None:
    """Device latency next to the build machine's for the same model file, when both exist."""
    ref = bundle.index.data.get("host_reference")
    if not r.profile or not ref:
        return None
    file = (r.profile.get("model") or {}).get("file") or ""
    plain = file.replace("_edgetpu.tflite", ".tflite")
    host = next((m for m in ref.get("models", []) if m.get("file") in (file, plain)), None)
    if host is None or not host.get("latency"):
        return None
    dev, hl = r.profile.get("latency") or {}, host["latency"]
    ratio = (dev["p50_ms"] / hl["p50_ms"]) if dev.get("p50_ms") and hl.get("p50_ms") else None
    return {
        "file_on_device": file,
        "file_on_host": host.get("file"),
        "measured_on_device": r.measured_on,
        "measured_on_host": ref.get("measured_on"),
        "device_p50_ms": dev.get("p50_ms"),
        "host_p50_ms": hl.get("p50_ms"),
        "device_threads": (r.profile.get("runtime") or {}).get("threads_effective"),
        "host_threads": host.get("threads"),
        "device_mean_ms": dev.get("mean_ms"),
        "host_mean_ms": hl.get("mean_ms"),
        "device_over_host_p50": round(ratio, 4) if ratio else None,
        "how": "both Model.run wall time per call after warm-up; device: seeded random inputs "
        "with the manifest's threads unless --threads (edgeopt_runtime profile); host: edgeopt "
        "convert's latency run; different runs, so read the ratio, not the microseconds",
    }


def deploy_document(
    results: list[DeviceResult], bundles: dict[str, LocalBundle], wall_s: float
) -> dict[str, Any]:
    """The ``edgeopt.deploy/1`` document."""
    devices = []
    for r in results:
        d = r.to_dict()
        d["vs_host"] = vs_host(r, bundles[r.bundle]) if r.bundle in bundles else None
        devices.append(d)
    return {
        "schema": DEPLOY_SCHEMA,
        "created": _now(),
        "wall_seconds": round(wall_s, 3),
        "summary": {s: sum(r.status == s for r in results) for s in STATUSES},
        "bundles": {
            name: {
                "path": str(b.directory),
                "target": b.target,
                "files": len(b.expected()),
                "bytes": b.total_bytes,
                "index_sha256": b.index_sha256,
                "host_reference": b.index.data.get("host_reference"),
            }
            for name, b in bundles.items()
        },
        "devices": devices,
    }


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def device_run(entry: dict[str, Any]) -> dict[str, Any]:
    """A device's row for ``report.json`` (``targets[].device_runs``)."""
    profile = entry.get("profile") or {}
    check = entry.get("check") or {}
    return {
        "device": entry["device"]["name"],
        "measured_on": entry["measured_on"],
        "url": entry["device"]["url"],
        "created": _now(),
        "bundle": entry["bundle"],
        "status": entry["status"],
        "error": entry["error"],
        "facts": compact_facts(entry.get("facts")),
        "model": (profile.get("model") or {}).get("file"),
        "runtime": profile.get("runtime"),
        "latency": profile.get("latency"),
        "timing": profile.get("timing"),
        "memory": profile.get("memory"),
        "check": {
            "status": check.get("status"),
            "summary": check.get("summary"),
            "models": [
                {
                    k: m.get(k)
                    for k in (
                        "file",
                        "format",
                        "precision",
                        "backend",
                        "delegate",
                        "status",
                        "outputs",
                        "notes",
                    )
                }
                for m in check.get("models", [])
            ],
        }
        if check
        else None,
        "vs_host": entry.get("vs_host"),
        "notes": entry.get("notes", []) + list(profile.get("notes") or []),
    }


def merge_into_report(
    report_path: Path, doc: dict[str, Any], bundles: dict[str, LocalBundle]
) -> list[str]:
    """Write each device's row into ``report_path`` under its target; returns merged devices.

    The file is replaced atomically (temp file + rename); devices whose bundle's target is not
    in the report are left out.
    """
    report = json.loads(report_path.read_text(encoding="utf-8"))
    by_target = {t.get("name"): t for t in report.get("targets", []) if isinstance(t, dict)}
    merged = []
    for entry in doc["devices"]:
        bundle = bundles.get(entry["bundle"])
        target = by_target.get(bundle.target if bundle else None)
        if target is None:
            continue
        rows = [
            r for r in target.get("device_runs", []) if r.get("device") != entry["device"]["name"]
        ]
        rows.append(device_run(entry))
        target["device_runs"] = rows
        merged.append(entry["device"]["name"])
    if merged:
        tmp = report_path.with_name(f".{report_path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, report_path)
    return merged


def _mib(n: int | None) -> str:
    return "?" if not n else f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1e3:.1f} µs" if x < 1 else f"{x:.3f} ms"


def format_text(doc: dict[str, Any]) -> str:
    """Readable summary of an ``edgeopt.deploy/1`` document."""
    lines = []
    for d in doc["devices"]:
        dev = d["device"]
        lines.append(f"{dev['name']} ({dev['url']}): {d['status']}")
        if d["error"]:
            lines.append(f"  error: {d['error']}")
        f = compact_facts(d.get("facts"))
        if f:
            lines.append(
                f"  measured on {d['measured_on']}: {f['os']}, kernel {f['kernel']} "
                f"{f['machine']}, {f['cpu']} x{f['cores']}, {_mib(f['memory_total_bytes'])}; "
                f"edgeopt-runtime {f['edgeopt_runtime']}, delegates "
                f"{', '.join(f['delegates_available']) or 'none'}"
            )
        p = d.get("push")
        if p:
            what = (
                "already up to date"
                if p["up_to_date"]
                else (
                    f"{len(p['uploaded'])} uploaded ({p['bytes_sent']} bytes), "
                    f"{len(p['linked']) + len(p['kept'])} unchanged"
                    + (f", {len(p['resumed'])} resumed" if p["resumed"] else "")
                )
            )
            lines.append(
                f"  push: {what}; sha256 of {p['verified_files']} files verified on the "
                f"device -> {p['remote_dir']}"
            )
            if p["damaged_on_device"]:
                lines.append(
                    f"  replaced files changed on the device since the last push: "
                    f"{', '.join(p['damaged_on_device'])}"
                )
        c = d.get("check")
        if c:
            lines.append(f"  check: {c['status']}: {c['summary']}")
            for m in c["models"]:
                for o in m.get("outputs", []):
                    err = (
                        f"max {o.get('max_steps')} steps"
                        if o.get("quantized")
                        else f"max abs error {o.get('max_abs_error')}"
                    )
                    lines.append(f"    {m['file']} [{m.get('delegate')}] {o['name']}: {err}")
        prof = d.get("profile")
        if prof:
            lat, rt = prof["latency"], prof["runtime"]
            lines.append(
                f"  profile: {prof['model']['file']} via {rt['backend']} {rt['backend_version']} "
                f"[{rt['delegate']}]: p50 {_ms(lat['p50_ms'])}, mean {_ms(lat['mean_ms'])} over "
                f"{lat['runs']} runs"
            )
        vh = d.get("vs_host")
        if vh and vh.get("device_over_host_p50"):
            lines.append(
                f"  vs {vh['measured_on_host']} (threads {vh['host_threads']}): p50 "
                f"{_ms(vh['host_p50_ms'])}; device/host p50 "
                f"{vh['device_over_host_p50']:.2f}x (device threads "
                f"{vh['device_threads']})"
            )
        lines += [f"  note: {n}" for n in d["notes"]]
    s = doc["summary"]
    lines.append(", ".join(f"{v} {k}" for k, v in s.items() if v) + f" in {doc['wall_seconds']} s")
    return "\n".join(lines)


__all__ = [
    "DEPLOY_SCHEMA",
    "compact_facts",
    "deploy_document",
    "device_run",
    "format_text",
    "merge_into_report",
    "vs_host",
]
