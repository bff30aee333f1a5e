"""``load()`` and ``Model``: one interface over the TFLite and ONNX runners.

``Model.run`` checks feeds once (names, count, rank, shape, dtype — the error says expected vs
given), quantizes float feeds for integer-input models and dequantizes integer outputs, so callers
of an int8 model and of its float original write the same code.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import backends, delegates
from .backends import LoadOptions, Runner
from .errors import DelegateError, EdgeOptError, InputError, ModelLoadError
from .files import MAX_MODEL_BYTES, read_capped
from .layout import IOLayouts
from .manifest import MANIFEST_NAME, Manifest, ModelEntry, read_manifest
from .manifest_schema import MAX_THREADS
from .spec import Dequantizer, Quantizer, QuantParams, TensorSpec

MAX_INSTANCES = 256
_INT_LIMITS = {"int8", "uint8", "int16", "int32", "int64", "uint16"}


class Outputs(dict):
    """Model outputs by name (in the model's output order); ``out[0]`` also works."""

    def __getitem__(self, key: str | int) -> np.ndarray:
        if isinstance(key, int):
            return list(self.values())[key]
        return super().__getitem__(key)


class _Feed:
    """Per-input facts precomputed once so ``run`` stays cheap."""

    __slots__ = ("spec", "dtype", "shape", "q", "rank", "quantizer")

    def __init__(self, spec: TensorSpec, ties: str) -> None:
        self.spec = spec
        self.dtype = np.dtype(spec.dtype)
        self.shape = spec.shape
        self.rank = len(spec.shape)
        self.q = spec.quantization if spec.is_quantized else None
        self.quantizer = Quantizer(self.q, spec.dtype, ties=ties) if self.q is not None else None


class Model:
    """A loaded model. Create it with ``edgeopt_runtime.load``."""

    def __init__(
        self,
        runner: Runner,
        path: Path,
        *,
        manifest: Manifest | None = None,
        entry: ModelEntry | None = None,
        notes: list[str] | None = None,
        layouts: IOLayouts | None = None,
    ) -> None:
        self._runner = runner
        self.path = path
        self.probe_ns: int | None = None  # time of the isolated probe (load(isolate=True))
        self.manifest = manifest
        self.entry = entry
        self.notes = list(notes or [])
        self.inputs = _with_manifest_quant(runner.inputs, entry.inputs if entry else [])
        self.outputs = _with_manifest_quant(runner.outputs, entry.outputs if entry else [])
        self._feeds = [_Feed(s, runner.ties) for s in self.inputs]
        # Layouts (edgeopt_runtime.layout): inputs/outputs are shown and fed in the source's
        # layout (NCHW from PyTorch); _feeds keep the model's own for raw=True and checks.
        self.layouts = layouts if layouts is not None or entry is None else IOLayouts.from_specs(
            entry.inputs, entry.outputs, self.inputs, self.outputs, str(path))
        if self.layouts is not None:
            self.inputs = self.layouts.source_specs(self.inputs, "inputs")
            self.outputs = self.layouts.source_specs(self.outputs, "outputs")
        self._by_name = {f.spec.name: i for i, f in enumerate(self._feeds)}
        self._out_q = [
            Dequantizer(s.quantization) if s.is_quantized else None for s in self.outputs
        ]
        self._out_names = [s.name for s in self.outputs]
        self._any_out_q = any(q is not None for q in self._out_q)
        single = self.inputs[0] if len(self.inputs) == 1 else None
        self._fast_shape = (
            tuple(single.shape)
            if single is not None and not single.is_dynamic and self.layouts is None else None
        )

    # -- facts -------------------------------------------------------------------------------
    @property
    def format(self) -> str:
        return self._runner.format

    @property
    def backend(self) -> str:
        return self._runner.backend

    @property
    def delegate(self) -> str:
        return self._runner.delegate

    @property
    def threads(self) -> int | None:
        return self._runner.threads

    @property
    def runner(self) -> Runner:
        """The backend runner (raw interpreter / session access for benchmarks)."""
        return self._runner

    def with_layouts(self, layouts: IOLayouts | None) -> Model:
        """This model fed and read in ``layouts`` (e.g. a converter's float TFLite in its
        source's NCHW; None: the manifest's, if any), sharing the runner and so its
        interpreter pool: as safe from many threads as the original."""
        model = Model(self._runner, self.path, manifest=self.manifest, entry=self.entry,
                      notes=self.notes, layouts=layouts)
        model.probe_ns = self.probe_ns
        return model

    def info(self) -> dict[str, Any]:
        """Backend, delegate, threads and model facts, for reports."""
        return {
            **self._runner.info(),
            "format": self.format,
            "path": str(self.path),
            "size_bytes": self.path.stat().st_size,
            "precision": self.entry.precision if self.entry else _guess_precision(self.inputs),
            "notes": list(self.notes),
        }

    def __repr__(self) -> str:
        ins = ", ".join(str(s) for s in self.inputs)
        return (
            f"<Model {self.path.name} {self.format} via {self.backend} [{self.delegate}] ({ins})>"
        )

    # -- running -----------------------------------------------------------------------------
    def run(self, feeds: Any, *, raw: bool = False) -> Outputs:
        """Run one inference.

        Args:
            feeds: a dict ``{input_name: array}``, a list in input order, or a single array for a
                single-input model. Float arrays are quantized to integer model inputs
                (round-to-nearest, saturating) unless ``raw``.
            raw: pass integer arrays straight through and return integer outputs untouched; a
                model with ``layouts`` then also takes and returns its own layout (NHWC)
                instead of the source's (NCHW).

        Returns:
            ``Outputs``: output name -> array (float for quantized outputs unless ``raw``).

        Raises:
            InputError: wrong input name, count, rank, shape or dtype (message: expected vs given).
        """
        fast = self._fast_shape
        if (
            fast is not None
            and type(feeds) is np.ndarray
            and feeds.shape == fast
            and feeds.dtype == self._feeds[0].dtype
            and feeds.flags.c_contiguous
        ):
            # Single static-shape input already in the model's dtype: nothing to check or convert
            # (keeps the per-call cost of the wrapper to a few microseconds even on big models).
            results = self._runner.run([feeds])
        else:
            results = self._runner.run(self.prepare(feeds, raw=raw))
            if self.layouts is not None and not raw:
                results = self.layouts.to_source(results)
        if raw or not self._any_out_q:
            return Outputs(zip(self._out_names, results, strict=True))
        return Outputs(
            (name, q(r) if q is not None else r)
            for name, r, q in zip(self._out_names, results, self._out_q, strict=True)
        )

    def prepare(self, feeds: Any, *, raw: bool = False) -> list[np.ndarray]:
        """Check feeds and convert them to what the runner takes (arrays in input order, in
        the model's own layout: source-layout feeds of a model with ``layouts`` are transposed
        unless ``raw``).

        Raises:
            InputError: as ``run``.
        """
        arrays = self._arrays(feeds)
        if self.layouts is not None and not raw:
            arrays = self.layouts.to_model(arrays, self.inputs)
        return [self._prepare(f, a, raw) for f, a in zip(self._feeds, arrays, strict=True)]

    def run_batch(self, feeds: Any, *, raw: bool = False) -> Outputs:
        """Run a batch of N samples on any model, including fixed batch-1 ones.

        Models with a dynamic batch dim run the batch at once; models with a fixed batch dim
        run sample by sample. Safe from many threads, like ``run``.
        """
        arrays = self._arrays(feeds)
        batch = {a.shape[0] if np.ndim(a) else 1 for a in arrays}
        if len(batch) != 1:
            raise InputError(f"run_batch: inputs disagree on the batch size: {sorted(batch)}")
        n = batch.pop()
        if n == 0:
            raise InputError("run_batch: the batch is empty (0 samples)")
        fixed = [f.shape[0] for f in self._feeds if f.rank and f.shape[0] is not None]
        if not fixed or all(d == n for d in fixed):
            return self.run(arrays, raw=raw)
        parts = [self.run([a[i : i + 1] for a in arrays], raw=raw) for i in range(n)]
        return Outputs(
            (name, np.concatenate([p[name] for p in parts], axis=0)) for name in self._out_names
        )

    def _arrays(self, feeds: Any) -> list[np.ndarray]:
        n = len(self._feeds)
        if isinstance(feeds, np.ndarray):
            if n != 1:
                names = ", ".join(self._by_name)
                raise InputError(
                    f"model has {n} inputs ({names}): pass a dict by name or a list, not one array"
                )
            return [feeds]
        if isinstance(feeds, Mapping):
            missing = [k for k in self._by_name if k not in feeds]
            extra = [k for k in feeds if k not in self._by_name]
            if missing or extra:
                raise InputError(
                    f"input names do not match: expected {sorted(self._by_name)}, got "
                    f"{sorted(map(str, feeds))}"
                    + (f" (missing {missing})" if missing else "")
                    + (f" (unknown {extra})" if extra else "")
                )
            return [np.asarray(feeds[f.spec.name]) for f in self._feeds]
        if isinstance(feeds, Sequence) and not isinstance(feeds, (str, bytes)):
            if len(feeds) != n:
                raise InputError(f"expected {n} input(s) {list(self._by_name)}, got {len(feeds)}")
            return [np.asarray(a) for a in feeds]
        raise InputError(
            f"feeds must be a dict, a list or a numpy array, got {type(feeds).__name__}"
        )

    def _prepare(self, f: _Feed, a: np.ndarray, raw: bool) -> np.ndarray:
        spec = f.spec
        if a.ndim != f.rank:
            raise InputError(
                f"input '{spec.name}': expected rank {f.rank} {spec.shape_str()}, got rank "
                f"{a.ndim} {list(a.shape)}"
            )
        if a.size == 0:
            # zero-size tensors crash some LiteRT kernels; an empty batch is never meant
            raise InputError(f"input '{spec.name}': empty array {list(a.shape)}, nothing to run")
        for want, got in zip(f.shape, a.shape, strict=True):
            if want is not None and want != got:
                hint = ""
                if f.shape and f.shape[0] == 1 and a.shape[0] != 1:
                    hint = "; the batch dim is fixed at 1: use run_batch() for N samples"
                raise InputError(
                    f"input '{spec.name}': expected shape {spec.shape_str()}, got "
                    f"{list(a.shape)}{hint}"
                )
        if a.dtype == f.dtype:
            return a if a.flags.c_contiguous else np.ascontiguousarray(a)
        kind = a.dtype.kind
        if f.q is not None and kind == "f":
            if raw:
                raise InputError(
                    f"input '{spec.name}': raw=True expects {spec.dtype} values, got {a.dtype}"
                )
            return f.quantizer(a)
        if f.dtype.kind == "f" and kind == "f":
            return a.astype(f.dtype)  # float64/float16 -> float32 loses nothing users care about
        if f.dtype.kind in "iu" and kind in "iu" and f.q is None:
            info = np.iinfo(f.dtype)
            if a.size and (a.min() < info.min or a.max() > info.max):
                raise InputError(
                    f"input '{spec.name}': values outside {spec.dtype} range "
                    f"[{info.min}, {info.max}]"
                )
            return a.astype(f.dtype)
        raise InputError(f"input '{spec.name}': expected dtype {spec.dtype}, got {a.dtype}")


def _with_manifest_quant(
    specs: list[TensorSpec], declared: list[dict[str, Any]]
) -> list[TensorSpec]:
    """Fill in IO quantization the model file does not carry (ONNX) from the manifest."""
    if not declared:
        return list(specs)
    by_name = {d.get("name"): d for d in declared if isinstance(d, dict)}
    out = []
    for s in specs:
        d = by_name.get(s.name)
        if s.quantization is None and d is not None and s.dtype in _INT_LIMITS:
            q = QuantParams.from_dict(d.get("quantization"))
            s = TensorSpec(s.name, s.shape, s.dtype, q)
        out.append(s)
    return out


def _guess_precision(inputs: list[TensorSpec]) -> str:
    """Best guess without a manifest: the quantized input dtype, else the input float dtype."""
    quantized = next((s.dtype for s in inputs if s.is_quantized), None)
    if quantized:
        return quantized
    return next((s.dtype for s in inputs if s.dtype.startswith("float")), "unknown")


def _read_model(path: Path, fmt: str, expected_sha256: str | None, inside: Path | None) -> bytes:
    """Read the model bytes (regular file, size-capped) and check them before any engine."""
    from . import verify

    data = read_capped(path, max_bytes=MAX_MODEL_BYTES, what="model file", inside=inside)
    if expected_sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected_sha256:
            raise ModelLoadError(
                f"{path}: sha256 {actual[:12]}… does not match the manifest's "
                f"{expected_sha256[:12]}…: the file is corrupt or was replaced"
            )
    if not data:
        raise ModelLoadError(f"{path}: file is empty, expected a {fmt} model")
    actual_fmt = verify.sniff_format(data)
    if actual_fmt is not None and actual_fmt != fmt:
        raise ModelLoadError(f"{path}: named like a .{fmt} model but is really a {actual_fmt} file")
    # Structural checks even for manifest-verified files: a matching hash proves the file is
    # what the converter wrote, not that a hand-edited manifest is honest.
    backends.get(fmt).check(data, str(path))
    return data


def vet_model_file(
    path: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    sha256: str | None = None,
    inside: str | os.PathLike[str] | None = None,
    isolate: bool = True,
) -> str:
    """Check an untrusted model file the way ``load`` does, without loading it here.

    Reads it (regular file, size cap, inside ``inside``), checks ``sha256``, the format and the
    structural checks, then (``isolate``) loads and runs it once in a child process. For tools
    that hand the file to other readers (``edgeopt inspect``).

    Returns:
        The model format (``"tflite"`` / ``"onnx"``).

    Raises:
        ModelLoadError: as ``load(..., isolate=True)``.
    """
    p = Path(path)
    if fmt is None:
        backend = backends.for_extension(p.suffix)
        if backend is None:
            known = ", ".join(backends.extensions())
            raise ModelLoadError(
                f"{p}: unsupported model file extension {p.suffix!r}; expected {known}"
            )
        fmt = backend.format
    data = _read_model(p, fmt, sha256, Path(inside) if inside is not None else None)
    if isolate:
        from .verify.probe import probe_model

        probe_model(data, fmt, str(p))
    return fmt


def edgetpu_available() -> bool:
    """True when the Edge TPU runtime library can be found by the dynamic loader."""
    return delegates.get("edgetpu").available()


def gpu_delegate_available() -> bool:
    """True when the TFLite GPU delegate library can be found by the dynamic loader."""
    return delegates.get("gpu").available()


def _compiled_for(file: str) -> delegates.Delegate | None:
    """The delegate a model file was compiled for (by its name), if any."""
    return next(
        (
            d
            for d in delegates.DELEGATES.values()
            if d.compiled_suffix and file.endswith(d.compiled_suffix)
        ),
        None,
    )


def _choose_entry(
    manifest: Manifest, fmt: str | None, precision: str | None, wanted: str | None, explicit: bool
) -> tuple[ModelEntry, list[str]]:
    """Pick the manifest model to load; prefer a compiled build only when it can run."""
    notes: list[str] = []
    candidates = [
        m
        for m in manifest.models
        if (not fmt or m.format == fmt) and (not precision or m.precision == precision)
    ]
    if not candidates:
        return manifest.select(fmt, precision), notes  # raises with the list of what exists
    plain = [m for m in candidates if _compiled_for(m.file) is None]
    d = delegates.DELEGATES.get(wanted or "")
    compiled = [m for m in candidates if d is not None and _compiled_for(m.file) is d]
    if compiled and (explicit or d.available()):
        return compiled[0], notes
    if compiled:
        notes.append(d.fallback_note)
    return (plain or candidates)[0], notes


def _check_count(value: Any, what: str, hi: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
        raise EdgeOptError(f"{what} must be an integer in 1..{hi}, got {value!r}")
    return value


def _caller_delegate(delegate: Any) -> str | None:
    """Validate a delegate the caller passed: a registry name or a library path of theirs."""
    if delegate is None:
        return None
    if not isinstance(delegate, str) or not delegate or "\x00" in delegate:
        raise DelegateError(f"delegate must be a name or a library path, got {delegate!r}")
    if delegate in delegates.DELEGATES or delegates.is_library_path(delegate):
        return delegate
    raise DelegateError(
        f"unknown delegate {delegate!r}: expected one of {', '.join(delegates.DELEGATES)} "
        "or a delegate library path"
    )


def _manifest_delegate(
    manifest: Manifest, entry: ModelEntry, notes: list[str]
) -> tuple[str, str | None]:
    """The delegate an artifact asks for (registry names only); absent accelerators degrade to
    the CPU with a note. A delegate the caller names explicitly is never replaced."""
    name, library = delegates.check_manifest_delegate(
        manifest.runtime, str(manifest.directory / MANIFEST_NAME)
    )
    d = delegates.DELEGATES[name]
    if d.needs_compiled_model and _compiled_for(entry.file) is not d:
        return delegates.DEFAULT, None  # the uncompiled model runs on the CPU (note: _choose_entry)
    if d.external:
        found = delegates.library_installed(library) if library else d.available()
        if not found:
            if d.fallback_note and d.fallback_note not in notes:
                notes.append(d.fallback_note)
            return delegates.DEFAULT, None
    return name, library


def _providers(value: Any, what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or not all(isinstance(p, str) and p for p in value)
    ):
        raise EdgeOptError(f"{what} must be a list of execution provider names, got {value!r}")
    return tuple(value)


def load(
    path: str | os.PathLike[str],
    *,
    threads: int | None = None,
    delegate: str | None = None,
    providers: list[str] | None = None,
    format: str | None = None,
    precision: str | None = None,
    delegate_options: dict[str, Any] | None = None,
    isolate: bool = False,
    max_instances: int | None = None,
) -> Model:
    """Load a ``.tflite`` / ``.onnx`` file or an edgeopt artifact directory.

    Args:
        path: model file, or a directory holding ``manifest.json`` next to its model(s).
        threads: interpreter / intra-op threads, 1..256 (default: manifest's, else the backend's).
        delegate: TFLite: ``"xnnpack"`` (default), ``"none"``, ``"edgetpu"``, ``"gpu"`` or a
            delegate library path (only the caller may choose a library: a manifest can only
            name a delegate of ``edgeopt_runtime.delegates``). Default for artifacts: the
            manifest's, falling back to the CPU (with a note in ``Model.notes``) when the
            accelerator library is not present.
        providers: ONNX Runtime execution providers (default: manifest's, else CPU).
        format / precision: choose among several models of an artifact directory.
        delegate_options: options passed to an external delegate.
        isolate: first load and run the model once in a child process (TFLite and ONNX), so a
            model that crashes the engine is refused instead of taking this process down.
        max_instances: TFLite: most interpreters kept for callers on many threads (default:
            the CPU count, at most 8; 1 = one interpreter behind a lock).

    Raises:
        ModelLoadError: missing/corrupt/mislabelled file, bad manifest, sha256 mismatch.
        DelegateError: requested delegate library or execution provider not available.
        EdgeOptError: an option out of range (threads, max_instances).
    """
    threads = _check_count(threads, "threads", MAX_THREADS)
    max_instances = _check_count(max_instances, "max_instances", MAX_INSTANCES)
    delegate = _caller_delegate(delegate)
    providers_t = _providers(providers, "providers")
    p = Path(path)
    manifest: Manifest | None = None
    entry: ModelEntry | None = None
    notes: list[str] = []
    library: str | None = None
    if p.is_dir():
        manifest = read_manifest(p)
        rt = manifest.runtime
        wanted = delegate if delegate is not None else rt.get("tflite_delegate")
        entry, notes = _choose_entry(manifest, format, precision, wanted, delegate is not None)
        model_path, fmt, expected = manifest.model_path(entry), entry.format, entry.sha256
        if delegate is None:
            delegate, library = _manifest_delegate(manifest, entry, notes)
        else:  # the manifest's delegate fields must still be valid
            delegates.check_manifest_delegate(rt, str(p / MANIFEST_NAME))
        threads = threads if threads is not None else rt.get("threads")
        if providers_t is None:
            providers_t = _providers(rt.get("onnx_providers"), "runtime.onnx_providers")
        inside: Path | None = p
    else:
        if not os.path.lexists(p):
            raise ModelLoadError(f"{p}: no such file or directory")
        backend = backends.for_extension(p.suffix)
        if backend is None:
            known = ", ".join(backends.extensions())
            raise ModelLoadError(
                f"{p}: unsupported model file extension {p.suffix!r}; expected {known} or "
                f"an artifact directory with {MANIFEST_NAME}"
            )
        model_path, fmt, expected, inside = p, backend.format, None, None
    options = LoadOptions(
        threads=threads,
        delegate=delegate,
        delegate_library=library,
        delegate_options=delegate_options,
        providers=providers_t,
        max_instances=max_instances,
    )
    data = _read_model(model_path, fmt, expected, inside)
    probe_ns = None
    if isolate:
        from .verify.probe import probe_model

        t0 = time.perf_counter_ns()
        probe_model(data, fmt, str(model_path), options)
        probe_ns = time.perf_counter_ns() - t0
    runner = backends.get(fmt).create(data, str(model_path), options)
    model = Model(runner, model_path, manifest=manifest, entry=entry, notes=notes)
    model.probe_ns = probe_ns
    return model


__all__ = [
    "Model",
    "Outputs",
    "edgetpu_available",
    "gpu_delegate_available",
    "load",
    "vet_model_file",
]
