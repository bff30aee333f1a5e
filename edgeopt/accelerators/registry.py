"""The accelerator registry: one entry per TFLite delegate / ONNX Runtime execution provider.

An entry bundles what the converter needs to know about where a target's model runs, so callers
ask the entry instead of comparing delegate names:

* ``analyze(path, profile)`` — the pre-flight analysis (``edgeopt.inspect.<module>``);
* ``post_build`` — an optional step after the model is built (the Edge TPU compiler);
* ``gated`` / ``device`` — whether ``--strict`` checks placement (for delegates: the runtime's
  table says it runs on another device than the host CPU), and what messages call it;
* ``runtime_delegate`` / ``available()`` — how ``edgeopt_runtime`` is asked to run it, and
  whether this host can (``edgeopt.accelerators.host``);
* ``compiled_suffix`` — artifact choice: models compiled for it (``*_edgetpu.tflite``) that the
  runtime prefers where the accelerator is present and the pre-flight skips;
* ``host_note(host_delegate)`` — what the report says when the host measured on its CPU instead.

A new delegate or execution provider is one ``register(Accelerator(...))`` here (plus its
analysis module under ``edgeopt/inspect/`` and its name in ``targets.Delegate``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import host
from .postbuild import PostBuild

if TYPE_CHECKING:
    from edgeopt.targets import TargetProfile

Analysis = Callable[[Path, "TargetProfile"], dict[str, Any]]
CPU_PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class Accelerator:
    """Where a target's model runs: one TFLite delegate or one ONNX execution provider."""

    name: str  # as in target profiles and manifests: xnnpack / edgetpu / gpu / none / an EP
    format: str  # tflite | onnx
    device: str  # what messages call it: "the Edge TPU"
    gated: bool  # --strict checks that the whole graph runs on it (CPU targets: reported only)
    analysis: Analysis
    runtime_delegate: str | None  # edgeopt_runtime.load(delegate=...) / the provider name
    post_build: PostBuild | None = None
    compiled_suffix: str | None = None
    # {host} is the delegate the host really used; None: nothing to say (it is the host's CPU)
    missing_note: str | None = None

    @property
    def on_host_cpu(self) -> bool:
        """Ops it does not take still run on the same CPU (so placement is not gated)."""
        return not self.gated

    def analyze(self, path: Path, profile: TargetProfile) -> dict[str, Any]:
        """The pre-flight analysis body of ``path`` for ``profile`` (``edgeopt.inspect/1``)."""
        return self.analysis(path, profile)

    def available(self) -> bool:
        """Whether this host can run it (asked of the runtime)."""
        return host.available(self)

    def is_compiled(self, file: str) -> bool:
        """A model compiled for this accelerator (only it can run the file)."""
        return self.compiled_suffix is not None and file.endswith(self.compiled_suffix)

    def host_note(self, host_delegate: str) -> str | None:
        """The report's note when the host measured on ``host_delegate`` instead of this."""
        if self.missing_note is None or host_delegate == self.runtime_delegate:
            return None
        return self.missing_note.format(host=host_delegate)


_REGISTRY: dict[tuple[str, str], Accelerator] = {}


def register(acc: Accelerator) -> Accelerator:
    """Add an entry (keyed by format and name).

    Raises:
        ValueError: already registered (a programming error).
    """
    key = (acc.format, acc.name)
    if key in _REGISTRY:
        raise ValueError(f"accelerator {acc.format}/{acc.name} is already registered")
    _REGISTRY[key] = acc
    return acc


def registered() -> list[Accelerator]:
    return list(_REGISTRY.values())


def get(fmt: str, name: str) -> Accelerator:
    """The entry for a delegate (``tflite``) or execution provider (``onnx``).

    An execution provider without an entry of its own gets a generic, gated one (pre-flight
    by ONNX node placement, availability from ONNX Runtime).

    Raises:
        KeyError: an unknown TFLite delegate (target profiles only hold registered names).
    """
    found = _REGISTRY.get((fmt, name))
    if found is not None:
        return found
    if fmt == "onnx":
        return _execution_provider(name)
    raise KeyError(f"no accelerator registered for {fmt} delegate {name!r}")


def for_target(profile: TargetProfile, fmt: str) -> Accelerator:
    """The accelerator a target's ``fmt`` model is meant for."""
    if fmt == "tflite":
        return get("tflite", profile.runtime.tflite_delegate.value)
    providers = list(profile.runtime.onnx_providers)
    return get("onnx", providers[0] if providers else CPU_PROVIDER)


def host_cpu(fmt: str) -> Accelerator:
    """What measurements on this host use: XNNPACK for TFLite, the CPU provider for ONNX."""
    return get(fmt, "xnnpack" if fmt == "tflite" else CPU_PROVIDER)


def runs_on_host_cpu(delegate: str) -> bool:
    """Whether a runtime delegate / provider name is this host's CPU (library paths: no)."""
    found = next((a for a in _REGISTRY.values() if delegate in (a.name, a.runtime_delegate)),
                 None)
    return found is not None and found.on_host_cpu


def is_compiled_model(file: str) -> bool:
    """A file compiled for some accelerator (e.g. ``*_edgetpu.tflite``)."""
    return any(a.is_compiled(file) for a in _REGISTRY.values())


def post_build_steps() -> list[PostBuild]:
    """Every registered post-build step (renderers ask them to describe their blocks)."""
    return [a.post_build for a in _REGISTRY.values() if a.post_build is not None]


# ------------------------------------------------------------------------------ analyses


def _tflite_analysis(module: str) -> Analysis:
    """Read the TFLite graph, then ``edgeopt.inspect.<module>.analyze(graph, profile)``."""

    def analyze(path: Path, profile: TargetProfile) -> dict[str, Any]:
        from edgeopt.inspect.tflite_graph import read_tflite

        graph = read_tflite(path)
        return importlib.import_module(f"edgeopt.inspect.{module}").analyze(graph, profile)

    return analyze


def _cpu_only(path: Path, profile: TargetProfile) -> dict[str, Any]:
    from edgeopt.inspect import report as R
    from edgeopt.inspect.tflite_graph import read_tflite

    graph = read_tflite(path)
    entries = [R.op_entry(op, "cpu", False, [], None) for op in graph.ops]
    return {"delegate": "none", "ops": entries, "summary": R.summary(entries, "a delegate", None),
            "notes": ["the target uses no delegate: every op runs on TFLite's CPU kernels"]}


def _onnx_analysis(path: Path, profile: TargetProfile) -> dict[str, Any]:
    from edgeopt.inspect.onnx_nodes import analyze

    return analyze(path, profile)


def _execution_provider(name: str) -> Accelerator:
    return Accelerator(
        name=name, format="onnx", device=name, gated=True, analysis=_onnx_analysis,
        runtime_delegate=name,
        missing_note=f"{name} not available on this host: timings are host-CPU timings "
                     "({host}), not " + name,
    )


def _edgetpu_compiler() -> PostBuild:
    from .edgetpu import EdgeTpuCompiler

    return EdgeTpuCompiler()


def _delegate(name: str, device: str, analysis: Analysis, **extra: Any) -> Accelerator:
    """A TFLite delegate's entry; whether it is gated comes from the runtime's delegate table
    (a delegate that runs on another device than the host CPU)."""
    return Accelerator(name=name, format="tflite", device=device,
                       gated=host.off_host_device(name), analysis=analysis,
                       runtime_delegate=name, **extra)


register(_delegate("xnnpack", "the CPU (XNNPACK)", _tflite_analysis("xnnpack")))
register(_delegate("none", "the CPU (TFLite kernels)", _cpu_only))
register(_delegate(
    "edgetpu", "the Edge TPU", _tflite_analysis("edgetpu"), post_build=_edgetpu_compiler(),
    compiled_suffix="_edgetpu.tflite",
    missing_note="no compiled *_edgetpu.tflite in this artifact: timings are host-CPU "
                 "timings ({host}) of the uncompiled int8 model, not Edge TPU",
))
register(_delegate(
    "gpu", "the mobile GPU", _tflite_analysis("gpu"),
    missing_note="no GPU delegate on this host: timings are host-CPU timings ({host}), "
                 "not mobile GPU",
))
register(Accelerator(
    name=CPU_PROVIDER, format="onnx", device="the CPU (ONNX Runtime)", gated=False,
    analysis=_onnx_analysis, runtime_delegate=CPU_PROVIDER,
))
