"""Process memory: resident set size now, its peak, and a sampler for the peak during a window.

Every number comes with the method that produced it, because RSS figures are easy to misread:

- Linux: ``/proc/self/statm`` (current RSS, cheap enough to poll every millisecond) and
  ``VmHWM`` in ``/proc/self/status`` (the kernel's exact peak). ``VmHWM`` is a process-lifetime
  peak; writing ``5`` to ``/proc/self/clear_refs`` resets it to the current RSS, which is how a
  per-phase peak is measured when the kernel allows it.
- Elsewhere: ``resource.getrusage`` ``ru_maxrss`` (a lifetime peak that cannot be reset), and a
  sampled peak from the background thread when a current-RSS source exists.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from typing import Any

_STATM = "/proc/self/statm"
_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class MemValue:
    """A memory figure in bytes (``None`` when unavailable) and how it was measured."""

    bytes: int | None
    method: str

    def to_dict(self) -> dict[str, Any]:
        mib = None if self.bytes is None else round(self.bytes / 2**20, 3)
        return {"bytes": self.bytes, "mib": mib, "method": self.method}


def _status_kib(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` in bytes (``None`` when not on Linux)."""
    try:
        with open(_STATUS, encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _ru_maxrss() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes vs KiB


def rss() -> MemValue:
    """Current resident set size of this process."""
    value = _status_kib("VmRSS")
    if value is not None:
        return MemValue(value, "VmRSS from /proc/self/status")
    peak = _ru_maxrss()
    if peak is not None:
        return MemValue(peak, "getrusage ru_maxrss (process peak; current RSS unavailable)")
    return MemValue(None, "unavailable on this platform")


def peak_rss() -> MemValue:
    """Peak resident set size: since the last ``reset_peak()`` on Linux, else process lifetime."""
    value = _status_kib("VmHWM")
    if value is not None:
        return MemValue(value, "VmHWM from /proc/self/status")
    peak = _ru_maxrss()
    if peak is not None:
        return MemValue(peak, "getrusage ru_maxrss (process-lifetime peak)")
    return MemValue(None, "unavailable on this platform")


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (``VmHWM``) to the current RSS.

    Returns:
        True when the reset worked (Linux, ``/proc/self/clear_refs`` writable), else False: the
        peak then stays a process-lifetime peak and callers must say so.
    """
    try:
        with open(_CLEAR_REFS, "w", encoding="ascii") as f:
            f.write("5")  # "5" resets only the peak RSS, it touches no page flags
        return True
    except OSError:
        return False


class _StatmReader:
    """Current RSS from ``/proc/self/statm`` with one open descriptor (cheap to poll)."""

    def __init__(self) -> None:
        self._fd: int | None = None
        try:
            self._fd = os.open(_STATM, os.O_RDONLY)
        except OSError:
            self._fd = None

    @property
    def available(self) -> bool:
        return self._fd is not None

    def read(self) -> int | None:
        if self._fd is None:
            return None
        try:
            return int(os.pread(self._fd, 128, 0).split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            return None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class PeakSampler:
    """Record the peak RSS during a ``with`` block with a background thread.

    The kernel's ``VmHWM`` is also reset on entry when allowed, so ``result()`` can report the
    exact peak (which catches spikes shorter than the sampling interval) next to the sampled one.

    Args:
        interval_s: sampling period (default 2 ms: frequent enough for inference-sized spikes,
            rare enough not to steal measurable time from the timed loop).
    """

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.samples = 0
        self.peak_sampled: int | None = None
        self.hwm_reset = False
        self._reader = _StatmReader()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._hwm = MemValue(None, "window not measured yet")

    def __enter__(self) -> PeakSampler:
        self.hwm_reset = reset_peak()
        self._sample()
        if self._reader.available:
            self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        self._hwm = peak_rss()
        self._reader.close()

    def _sample(self) -> None:
        value = self._reader.read()
        if value is not None:
            self.samples += 1
            if self.peak_sampled is None or value > self.peak_sampled:
                self.peak_sampled = value

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def sampled(self) -> MemValue:
        """The sampled peak (``None`` bytes when no current-RSS source exists)."""
        if self.peak_sampled is None:
            return MemValue(None, "unavailable: no /proc/self/statm on this platform")
        return MemValue(
            self.peak_sampled,
            f"max of {self.samples} /proc/self/statm samples every "
            f"{self.interval_s * 1e3:g} ms (background thread)",
        )

    def kernel_peak(self) -> MemValue:
        """The kernel's peak for the window when it could be reset, else a lifetime peak."""
        hwm = self._hwm
        if hwm.bytes is None:
            return hwm
        if self.hwm_reset:
            return MemValue(hwm.bytes, "VmHWM after reset via /proc/self/clear_refs")
        return MemValue(hwm.bytes, f"{hwm.method}: process-lifetime peak, could not be reset")

    def best(self) -> MemValue:
        """The most faithful peak for the window.

        With a reset ``VmHWM``: the larger of it and the sampled peak (the kernel updates its
        counters lazily, so a sample can exceed it by a few hundred KiB; the kernel catches
        spikes between samples). Without a reset: the sampled peak, as a lifetime peak would
        describe the whole process rather than the window.
        """
        sampled = self.sampled()
        if self.hwm_reset and self._hwm.bytes is not None:
            peak = max(self._hwm.bytes, sampled.bytes or 0)
            return MemValue(
                peak,
                f"max(VmHWM since reset via /proc/self/clear_refs, sampled: {sampled.method})",
            )
        return sampled if sampled.bytes is not None else self.kernel_peak()


__all__ = ["MemValue", "PeakSampler", "peak_rss", "reset_peak", "rss"]
