"""The isolated probe: load and run an untrusted model once in a child process.

The structural checks catch the crashes we know of; the probe catches the ones we do not. The
child gets the model *bytes* on stdin (the very bytes the parent checked and will load: no file
can be swapped in between), builds the backend's runner, runs it once on seeded random inputs,
drops it and collects garbage (one crash, a heap overrun, surfaced only in ``free`` at GC), and
exits. A child killed by a signal, hung, or refusing the model makes the parent refuse it with
one line; the parent's own process never ran the engine on the bytes.

Cost (``docs/architecture.md``, measured by ``tests/runtime/test_probe.py``): one Python start
plus numpy and the engine's import, ~0.3-0.6 s on this host; on by default in the CLIs
(``--no-isolate`` skips it), ``load(isolate=True)`` in the library.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

from ..backends import LoadOptions
from ..errors import ModelLoadError

PROBE_TIMEOUT_S = 120.0
MAX_PROBE_ELEMENTS = 1 << 26  # inputs bigger than this are loaded but not run in the probe
CHILD_ADDRESS_SPACE = 16 << 30  # a runaway allocation fails in the child instead of the host
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])
_ENGINES = {"tflite": "the TFLite interpreter", "onnx": "ONNX Runtime"}

_CHILD = r"""
import sys
sys.path.insert(0, sys.argv[1])
from edgeopt_runtime.verify.probe import child_main
sys.exit(child_main(sys.stdin.buffer.read(), sys.argv[2], sys.argv[3], sys.argv[4]))
"""


def _child_options(options: LoadOptions | None) -> dict[str, object]:
    """What the child loads with: the CPU path of the same engine, one thread."""
    delegate = options.delegate if options and options.delegate in ("xnnpack", "none") else None
    return {"delegate": delegate}


def probe_model(
    data: bytes,
    fmt: str,
    source: str,
    options: LoadOptions | None = None,
    *,
    timeout: float = PROBE_TIMEOUT_S,
) -> None:
    """Load and run ``data`` (a ``fmt`` model) once in a child process.

    Args:
        data: the model bytes (already through the structural checks).
        fmt: ``"tflite"`` / ``"onnx"``.
        source: the file name, for messages.
        options: the parent's load options (the child uses the same CPU delegate, one thread).
        timeout: seconds before the probe counts as hung.

    Raises:
        ModelLoadError: the child crashed (signal), hung, or the engine refused the model.
    """
    engine = _ENGINES.get(fmt, fmt)
    cmd = [
        sys.executable, "-I", "-c", _CHILD, _PACKAGE_PARENT, fmt, source,
        json.dumps(_child_options(options)),
    ]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(
            cmd, input=bytes(data), capture_output=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        raise ModelLoadError(
            f"{source}: the isolated probe did not finish within {timeout:g} s; refusing to load"
        ) from None
    if proc.returncode < 0:
        sig = -proc.returncode
        try:
            name = f"signal {sig}, {signal.Signals(sig).name}"
        except ValueError:
            name = f"signal {sig}"
        raise ModelLoadError(
            f"{source}: the model crashed {engine} ({name}) in an isolated probe; refusing to load"
        )
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
        detail = next(
            (ln for ln in lines if ln.startswith("LOAD-ERROR:")), lines[-1] if lines else ""
        )
        detail = detail.removeprefix("LOAD-ERROR:").strip()[:300]
        if proc.returncode == 3:
            raise ModelLoadError(f"{source}: {engine} refused the model in an isolated probe: "
                                 f"{detail}")  # fmt: skip
        raise ModelLoadError(
            f"{source}: the isolated probe failed (exit {proc.returncode}): {detail}; "
            "refusing to load"
        )


def probe_in_subprocess(path: str | os.PathLike[str], timeout: float = PROBE_TIMEOUT_S) -> None:
    """``probe_model`` for a model file (format from its contents, else its extension)."""
    from .. import backends
    from .onnx import sniff_format

    p = Path(path)
    data = p.read_bytes()
    backend = backends.for_extension(p.suffix)
    fmt = sniff_format(data) or (backend.format if backend else "tflite")
    probe_model(data, fmt, str(p), timeout=timeout)


def _limit_memory() -> None:
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = (
            CHILD_ADDRESS_SPACE
            if hard == resource.RLIM_INFINITY
            else min(hard, CHILD_ADDRESS_SPACE)
        )
        if soft == resource.RLIM_INFINITY or soft > cap:
            resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ImportError, ValueError, OSError):  # pragma: no cover - not on this platform
        pass


def child_main(data: bytes, fmt: str, source: str, options_json: str) -> int:
    """The child's side: load, run once, drop, collect. Exit 0 ok, 3 refused by the engine."""
    import gc

    from .. import backends
    from ..errors import EdgeOptError
    from ..feeds import random_feeds
    from ..model import Model

    _limit_memory()
    opts = json.loads(options_json)
    try:
        runner = backends.get(fmt).create(
            data, source, LoadOptions(threads=1, delegate=opts.get("delegate"), max_instances=1)
        )
        model = Model(runner, Path(source))
    except EdgeOptError as exc:
        print("LOAD-ERROR:", str(exc).replace("\n", " ")[:300], file=sys.stderr)
        return 3
    elements = sum(math.prod(d or 1 for d in s.shape) for s in model.inputs)
    if elements <= MAX_PROBE_ELEMENTS:
        try:
            model.run(random_feeds(model.inputs, seed=0))
        except EdgeOptError:
            pass  # a model may refuse random inputs; only a crash is grounds for refusal
    del model, runner
    gc.collect()
    return 0


__all__ = ["PROBE_TIMEOUT_S", "probe_in_subprocess", "probe_model"]
