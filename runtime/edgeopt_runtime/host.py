"""Facts about the machine numbers were measured on, shared by the runtime's profile and the
converter's reports (one helper, so both describe a host the same way)."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import numpy as np


def host_info() -> dict[str, Any]:
    """CPU model, machine, OS and Python of this host.

    ``platform`` repeats ``os`` and ``processor`` is ``platform.processor()``: the converter's
    report schema (``edgeopt.report/1``) names them so.
    """
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "platform": platform.platform(),
        "processor": platform.processor() or None,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
    }


def cpu_model() -> str:
    """Human-readable CPU name (``/proc/cpuinfo`` on Linux, ``sysctl`` on macOS), best effort."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            fields = dict(
                (k.strip().lower(), v.strip())
                for k, _, v in (line.partition(":") for line in f)
                if v.strip()
            )
        for key in ("model name", "hardware", "cpu model", "processor"):
            value = fields.get(key)
            if value and not value.isdigit():  # ARM's "processor : 0" is an index
                return value
        if "cpu part" in fields:
            return f"ARM implementer {fields.get('cpu implementer')} part {fields['cpu part']}"
    except OSError:
        pass
    if sys.platform == "darwin":
        import subprocess

        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=2,
                check=False,
            )
            if out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or "unknown"


__all__ = ["cpu_model", "host_info"]
