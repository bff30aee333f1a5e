"""The host: CPU model and flags, and the peak fp32 / int8 MAC rate of one core.

How the peak is derived (stated in every results file, under ``host.peak``):

    peak MAC/s per core = MACs per cycle (vector width x lanes x pipes) x clock

* MACs per cycle come from the micro-architecture table ``VECTOR_UNITS`` below (data, with
  sources). It is keyed on vendor, CPU family and flags from ``/proc/cpuinfo``.
* The clock is measured, when a C compiler is present, by ``peak_probe.c``: a chain of dependent
  1-cycle integer adds runs at exactly one add per cycle, so adds/second = the clock under load
  (turbo included). Without a compiler: ``cpu MHz`` from ``/proc/cpuinfo`` (a nominal or
  momentary value; turbo can be higher, so the roof fraction is then an upper bound).
* The same probe also measures the MAC throughput of the vector units directly (12 independent
  FMA / VPDPBUSD chains): ``measured`` MACs per cycle confirm or correct the table. When the two
  disagree by more than 10 % the measured value is used and the disagreement is reported.

Python cannot time a clock cycle (a numpy loop measures the interpreter, not the core), which is
why the probe is C; it compiles in well under a second and nothing else depends on it.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_PROBE_SRC = Path(__file__).with_name("peak_probe.c")


@dataclass(frozen=True)
class VectorUnits:
    """Per-core MAC throughput of one micro-architecture family (MACs per cycle)."""

    name: str
    fp32_macs_per_cycle: int
    int8_macs_per_cycle: int
    derivation: str


# Sources: AMD "Software Optimization Guide for AMD Family 19h" (Zen 4: four 256-bit FP pipes,
# two of them FMA; 512-bit ops are issued as two 256-bit halves), Intel 64 and IA-32
# Optimization Reference Manual (Skylake-SP and later: two 512-bit FMA ports on Xeon Gold/
# Platinum parts), Arm Cortex-A76/A78 software optimization guides (two 128-bit NEON pipes).
VECTOR_UNITS: dict[str, VectorUnits] = {
    "amd-zen4-avx512": VectorUnits(
        "AMD Zen 4 (AVX-512 on 256-bit datapaths)",
        16,
        64,
        "fp32: 2 FMA pipes x 256 bit = 2 x 8 lanes = 16 FMA/cycle (a 512-bit FMA issues as two "
        "256-bit halves, so AVX-512 does not double it); int8: VPDPBUSD does 4 u8 x s8 MACs per "
        "32-bit lane, 2 pipes x 8 lanes x 4 = 64 MACs/cycle",
    ),
    "x86-avx512-2fma": VectorUnits(
        "Intel AVX-512 server core, 2 x 512-bit FMA ports",
        32,
        128,
        "fp32: 2 FMA ports x 16 lanes = 32 FMA/cycle; int8 with VNNI: VPDPBUSD 64 MACs per "
        "512-bit instruction x 2 ports = 128 (without VNNI: VPMADDUBSW+VPMADDWD+VPADDD, assumed "
        "half of that); parts with one 512-bit FMA unit reach half — the probe tells",
    ),
    "x86-avx2-fma": VectorUnits(
        "x86 AVX2 + FMA core",
        16,
        32,
        "fp32: 2 FMA ports x 8 lanes = 16 FMA/cycle; int8 without VNNI: VPMADDUBSW+VPMADDWD "
        "(+VPADDD) per 32 MACs, assumed 1/cycle = 32 MACs/cycle (AVX-VNNI: 64)",
    ),
    "arm-neon-dotprod": VectorUnits(
        "Arm Cortex-A7x class, 2 x 128-bit NEON pipes",
        8,
        32,
        "fp32: 2 pipes x 4 lanes = 8 FMA/cycle; int8: SDOT/UDOT 16 MACs per 128-bit "
        "instruction x 2 pipes = 32 MACs/cycle (without dotprod: SMLAL, ~16)",
    ),
}


def cpuinfo(path: str = "/proc/cpuinfo") -> dict[str, Any]:
    """CPU facts from ``/proc/cpuinfo`` (first processor block) and the OS.

    Returns:
        ``model``, ``vendor``, ``family``, ``cpu_model``, ``mhz``, ``flags`` (sorted list),
        ``cores`` (CPUs this process may run on), ``machine``, ``hostname``.
    """
    fields: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    if fields:
                        break  # first processor block is enough
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = sorted(set((fields.get("flags") or fields.get("Features") or "").split()))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return {
        "model": fields.get("model name") or platform.processor() or "unknown",
        "vendor": fields.get("vendor_id", "unknown"),
        "family": _int(fields.get("cpu family")),
        "cpu_model": _int(fields.get("model")),
        "mhz": _float(fields.get("cpu MHz")),
        "flags": flags,
        "cores": cores,
        "machine": platform.machine(),
        "hostname": socket.gethostname(),
    }


def _int(s: str | None) -> int | None:
    try:
        return int(s) if s is not None else None
    except ValueError:
        return None


def _float(s: str | None) -> float | None:
    try:
        return float(s) if s is not None else None
    except ValueError:
        return None


def vector_units(info: dict[str, Any]) -> tuple[VectorUnits | None, str]:
    """Pick the ``VECTOR_UNITS`` entry for this CPU.

    Returns:
        (entry or None, one line saying why it was chosen or why none fits).
    """
    flags = set(info["flags"])
    vendor, family = info["vendor"], info["family"]
    if "avx512f" in flags and vendor == "AuthenticAMD" and family == 0x19:
        return VECTOR_UNITS["amd-zen4-avx512"], "AMD family 19h with avx512f = Zen 4"
    if "avx512f" in flags:
        return VECTOR_UNITS["x86-avx512-2fma"], f"{vendor} with avx512f"
    if "avx2" in flags and "fma" in flags:
        return VECTOR_UNITS["x86-avx2-fma"], f"{vendor} with avx2 and fma"
    if "asimd" in flags:
        return VECTOR_UNITS["arm-neon-dotprod"], "Arm with asimd"
    return None, f"no entry for vendor {vendor!r} with these flags"


def int8_instruction(flags: list[str]) -> str:
    """The int8 dot-product instruction family this CPU has (for the report)."""
    f = set(flags)
    if "avx512_vnni" in f:
        return "AVX512-VNNI (vpdpbusd)"
    if "avx_vnni" in f:
        return "AVX-VNNI (vpdpbusd, 256-bit)"
    if "asimddp" in f:
        return "Arm dotprod (sdot/udot)"
    if "avx2" in f:
        return "AVX2 (vpmaddubsw + vpmaddwd, no VNNI)"
    return "unknown"


def run_probe(timeout_s: float = 60.0) -> dict[str, float] | None:
    """Compile and run ``peak_probe.c``; ``None`` when there is no C compiler or not x86-64.

    Returns:
        ``clock_ghz``, ``fp32_gmacs``, ``fp32_lanes`` and (with VNNI) ``int8_gmacs``,
        ``int8_lanes``, as floats.
    """
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None or platform.machine() not in ("x86_64", "AMD64"):
        return None
    with tempfile.TemporaryDirectory(prefix="edgeopt-peak-") as tmp:
        exe = Path(tmp) / "peak_probe"
        build = subprocess.run(
            [cc, "-O2", "-march=native", str(_PROBE_SRC), "-o", str(exe)],
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )
        if build.returncode != 0:
            return None
        out = subprocess.run(
            [str(exe)], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    values: dict[str, float] = {}
    for line in out.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key != "sink":
            values[key] = float(value)
    return values if "clock_ghz" in values else None


def peak(info: dict[str, Any], probe: dict[str, float] | None) -> dict[str, Any]:
    """Peak fp32 and int8 MAC/s per core, with the derivation and its assumptions.

    Args:
        info: from :func:`cpuinfo`.
        probe: from :func:`run_probe` (or None).

    Returns:
        A JSON-ready dict: ``clock_ghz`` (+ ``clock_source``), ``fp32_macs_per_cycle``,
        ``int8_macs_per_cycle`` (+ ``*_source``), ``fp32_gmacs_per_core``,
        ``int8_gmacs_per_core``, ``table_entry``, ``derivation``, ``assumptions``, ``probe``.
    """
    units, why = vector_units(info)
    assumptions: list[str] = []
    if probe:
        clock = probe["clock_ghz"]
        clock_src = "measured: dependent integer-add chain in peak_probe.c (boost included)"
    else:
        clock = (info["mhz"] or 0.0) / 1000.0
        clock_src = "/proc/cpuinfo cpu MHz (nominal; turbo may be higher: roof % is an upper bound)"
        assumptions.append("no C compiler: clock and MACs/cycle not measured")
    result: dict[str, Any] = {
        "clock_ghz": round(clock, 4),
        "clock_source": clock_src,
        "table_entry": units.name if units else None,
        "table_match": why,
        "derivation": units.derivation if units else None,
        "int8_instruction": int8_instruction(info["flags"]),
        "probe": probe,
    }
    for kind in ("fp32", "int8"):
        table = getattr(units, f"{kind}_macs_per_cycle") if units else None
        measured = None
        if probe and f"{kind}_gmacs" in probe and clock:
            measured = probe[f"{kind}_gmacs"] / clock
        value, source = _choose(kind, table, measured, assumptions)
        result[f"{kind}_macs_per_cycle"] = value
        result[f"{kind}_macs_per_cycle_source"] = source
        result[f"{kind}_gmacs_per_core"] = round(value * clock, 2) if value and clock else None
    result["assumptions"] = assumptions + [
        "peak = MACs/cycle x clock per core; n threads are compared against n x that",
        "the roof ignores memory bandwidth, so depthwise / elementwise-heavy models sit far "
        "below it by design: the roof % says how much headroom exists, not what is reachable",
    ]
    return result


def _choose(
    kind: str, table: int | None, measured: float | None, assumptions: list[str]
) -> tuple[float | None, str]:
    if measured is None:
        return table, "table" if table else "unknown"
    if table is None:
        return round(measured, 1), "measured (no table entry)"
    if abs(measured - table) / table <= 0.10:
        return table, f"table, confirmed by probe ({measured:.1f} measured)"
    assumptions.append(
        f"{kind}: table says {table} MACs/cycle, probe measured {measured:.1f}: using measured"
    )
    return round(measured, 1), "measured (disagrees with table)"


def describe(run_probe_too: bool = True) -> dict[str, Any]:
    """Everything about the host a results file needs: CPU facts and the peak derivation."""
    info = cpuinfo()
    probe = run_probe() if run_probe_too else None
    flags = info.pop("flags")
    simd = sorted(f for f in flags if f.startswith(("avx", "fma", "f16c", "amx", "asimd", "sve")))
    return {**info, "simd_flags": simd, "peak": peak({**info, "flags": flags}, probe)}
