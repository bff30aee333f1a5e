"""The one evaluator: a candidate model against its reference, on the same samples.

``convert`` (every artifact against the float model converted to the same format), ``compare``
(two files) and the tuning loop (many candidates against one reference) all measure through
:func:`evaluate`, so they cannot disagree about the same models and data:

* both models run through ``edgeopt_runtime`` on the same samples, one sample at a time, the
  candidate's inputs and outputs matched to the reference's by name (else by position);
* outputs are kept **per sample** (:class:`OutputStack`), in sample order, so per-sample
  metrics are a loop over ``stack.sample(i)``; drift and task metrics come from
  ``edgeopt.drift`` on those outputs;
* latency is measured one way (:func:`measure_latency`): untimed warm-up pairs, then reference
  and candidate run alternately on the same feed, each call timed on its own;
* the evaluation samples are chosen one way (:class:`EvalData`): a seeded subset of at most
  ``max_samples`` (``DEFAULT_MAX_EVAL``) of the data.

For executors (serial, process pool, Ray) an evaluation is a value: :class:`EvaluationJob`
holds only paths and options (:class:`ModelRef`, :class:`EvalData`, :class:`EvalOptions`) and,
for the tuning loop, the reference's outputs computed once (:class:`ReferenceOutputs`, from
:func:`run_reference`); :func:`run_job` (module level, so executors pickle it by reference)
loads the models in the worker and returns the :class:`edgeopt.results.Evaluation` record.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from edgeopt_runtime.errors import CalibrationError, InputError
from edgeopt_runtime.spec import TensorSpec

from .results import (
    DataInfo,
    Evaluation,
    LabelsInfo,
    LatencyPair,
    LatencyStats,
    OutputDrift,
    TaskMetrics,
)

if TYPE_CHECKING:
    import edgeopt_runtime as rt

    from .calibration import CalibrationSource, Preprocessing

DEFAULT_MAX_EVAL = 256  # drift is measured on at most this many samples (a seeded subset)
DEFAULT_LATENCY_RUNS = 50
LATENCY_WARMUP = 5  # untimed pairs first: the first inferences include lazy allocation
HOST_THREADS = 1  # measured single-threaded: stable on a shared host, comparable across runs
LATENCY_METHOD = ("Model.run on the first evaluation sample, reference and candidate "
                  "alternating, each call timed with perf_counter_ns, after {warmup} untimed "
                  "pairs")


# ------------------------------------------------------------------------------ models


@dataclass(frozen=True)
class ModelRef:
    """How to load one model through ``edgeopt_runtime`` (a value: picklable, hashable).

    ``path`` is a ``.tflite`` / ``.onnx`` file or an artifact directory (``format`` /
    ``precision`` choose among its models). ``delegate`` None is the runtime's default (the
    manifest's for an artifact directory, XNNPACK for a ``.tflite`` file). ``isolate`` probes an
    untrusted file in a child process before this process loads it.
    """

    path: Path
    threads: int | None = HOST_THREADS
    delegate: str | None = None
    providers: tuple[str, ...] | None = None
    format: str | None = None
    precision: str | None = None
    isolate: bool = False  # probe the file in a child process first (untrusted files)

    @classmethod
    def host_cpu(cls, path: Path, threads: int | None = HOST_THREADS) -> ModelRef:
        """How every measurement on this host loads a model file: its CPU (XNNPACK for
        TFLite, the CPU execution provider for ONNX), ``threads`` threads."""
        from .accelerators import host_cpu

        fmt = "onnx" if Path(path).suffix.lower() == ".onnx" else "tflite"
        cpu = host_cpu(fmt)
        if fmt == "onnx":
            return cls(Path(path), threads=threads, providers=(cpu.name,))
        return cls(Path(path), threads=threads, delegate=cpu.runtime_delegate)

    def load(self) -> rt.Model:
        """Load the model (LiteRT's delegate chatter goes to stderr, never stdout).

        Raises:
            ModelLoadError: missing / corrupt file. DelegateError: delegate not available.
        """
        import edgeopt_runtime as rt

        from .backends._frameworks import stdout_to_stderr

        with stdout_to_stderr():
            return rt.load(self.path, threads=self.threads, delegate=self.delegate,
                           providers=list(self.providers) if self.providers else None,
                           format=self.format, precision=self.precision,
                           isolate=self.isolate)


def _dims_compatible(a: TensorSpec, b: TensorSpec) -> bool:
    if len(a.shape) != len(b.shape):
        return False
    return all(x is None or y is None or x == y for x, y in zip(a.shape, b.shape, strict=True))


def match_signatures(ref: Sequence[TensorSpec], cand: Sequence[TensorSpec],
                     what: str) -> tuple[list[int], str | None]:
    """Candidate index for each reference tensor: by name, else by position.

    Returns:
        (candidate indices in reference order, a note when matched by position).

    Raises:
        InputError: counts differ or a matched pair has incompatible shapes (names both).
    """
    if len(ref) != len(cand):
        raise InputError(
            f"reference has {len(ref)} {what}s ({', '.join(s.name for s in ref)}) but candidate "
            f"has {len(cand)} ({', '.join(s.name for s in cand)})")
    names = {s.name: i for i, s in enumerate(cand)}
    note = None
    if all(s.name in names for s in ref):
        order = [names[s.name] for s in ref]
    else:
        order = list(range(len(ref)))
        note = (f"{what} names differ ({', '.join(s.name for s in ref)} vs "
                f"{', '.join(s.name for s in cand)}): matched by position")
    for r, i in zip(ref, order, strict=True):
        if not _dims_compatible(r, cand[i]):
            raise InputError(f"{what} {r.name!r}: reference shape {r.shape_str()} does not match "
                             f"candidate {cand[i].name!r} shape {cand[i].shape_str()}")
    return order, note


@dataclass(frozen=True)
class Pairing:
    """How the candidate's inputs and outputs line up with the reference's.

    Drift is reported under the reference's output names, in the reference's order.
    """

    inputs: Mapping[str, str]  # reference input name -> candidate input name
    outputs: tuple[int, ...]  # candidate output index for each reference output
    names: tuple[str, ...]  # reference output names
    notes: tuple[str, ...] = ()

    @classmethod
    def of(cls, ref_inputs: Sequence[TensorSpec], ref_outputs: Sequence[TensorSpec],
           cand_inputs: Sequence[TensorSpec], cand_outputs: Sequence[TensorSpec]) -> Pairing:
        """Match two signatures (see :func:`match_signatures`).

        Raises:
            InputError: the signatures cannot be matched.
        """
        in_order, note_in = match_signatures(ref_inputs, cand_inputs, "input")
        out_order, note_out = match_signatures(ref_outputs, cand_outputs, "output")
        inputs = {r.name: cand_inputs[i].name for r, i in zip(ref_inputs, in_order, strict=True)}
        return cls(inputs, tuple(out_order), tuple(s.name for s in ref_outputs),
                   tuple(n for n in (note_in, note_out) if n))

    @property
    def same_input_names(self) -> bool:
        return all(k == v for k, v in self.inputs.items())

    def candidate_feeds(self, feeds: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """A reference feed dict renamed for the candidate."""
        if self.same_input_names:
            return feeds
        return {self.inputs[k]: v for k, v in feeds.items()}


# ------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class EvalData:
    """Which samples an evaluation runs on, as a value (picklable, hashable).

    The selection rule is the same for every command: the samples of ``path`` (all, or a
    seeded random subset of ``num``), capped at ``max_samples`` by a seeded subset of that size.
    Labels come from ``labels`` (``.npy``, ``.npz`` with ``labels``/``y``, or text with one id
    per line, aligned with the data's rows) or else from the data's own ``labels``/``y`` array.
    """

    path: str | None  # None: seeded synthetic data (needs allow_synthetic)
    num: int | None = None
    seed: int = 0
    max_samples: int | None = DEFAULT_MAX_EVAL
    preprocessing: Preprocessing | None = None
    labels: str | None = None
    allow_synthetic: bool = False
    role: str = "evaluation"  # what the report calls the data: validation / calibration / ...

    @property
    def limit(self) -> int | None:
        """The ``num`` passed to ``open_calibration``: the subset size, capped."""
        caps = [n for n in (self.num, self.max_samples) if n is not None]
        return min(caps) if caps else None

    def open(self, inputs: Sequence[TensorSpec], *,
             reuse: CalibrationSource | None = None) -> EvalSamples:
        """Check the data against ``inputs`` and select the samples.

        Args:
            inputs: the reference model's inputs.
            reuse: an already open source of the same ``path`` / ``num`` / ``seed`` /
                preprocessing (convert's calibration data); used as it is when the cap selects
                the same samples (it holds no more than ``max_samples``), saving a pass.

        Raises:
            CalibrationError: unreadable data, data that does not fit the inputs, labels that
                do not match the data.
        """
        from .calibration import open_calibration

        if reuse is not None and (self.max_samples is None or reuse.count <= self.max_samples):
            src = reuse
        else:
            src = open_calibration(self.path, list(inputs), num=self.limit, seed=self.seed,
                                   preprocessing=self.preprocessing,
                                   allow_synthetic=self.allow_synthetic)
        rows, available = data_selection(src)
        labels, where = _labels_for(src, self.labels, rows, available)
        return EvalSamples(self, src, labels, where, rows if src.count < available else None)


def data_selection(src: CalibrationSource) -> tuple[np.ndarray, int]:
    """(selected row indices, rows the data holds) of an open calibration source."""
    return src.indices, src.available


def read_labels(path: Path) -> np.ndarray:
    """Labels from .npy, .npz (key ``labels`` or ``y``) or a text file of one id per line.

    Raises:
        CalibrationError: missing or unreadable file, no labels array in an ``.npz``.
    """
    from edgeopt_runtime.npz import read_npy, read_npz_arrays

    try:
        # The runtime's readers check declared sizes before reading (no decompression bomb).
        if path.suffix == ".npz":
            arrays = read_npz_arrays(path, error=CalibrationError)
            key = next((k for k in ("labels", "y") if k in arrays), None)
            if key is None:
                raise CalibrationError(f"{path}: no 'labels' or 'y' array (has "
                                       f"{', '.join(arrays) or 'nothing'})")
            return np.asarray(arrays[key])
        if path.suffix == ".npy":
            return read_npy(path, error=CalibrationError)
        return np.loadtxt(path, dtype=np.int64, ndmin=1)
    except FileNotFoundError:
        raise CalibrationError(f"{path}: no such labels file") from None
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"{path}: cannot read labels: {exc}") from None


def _labels_for(src: CalibrationSource, labels_path: str | None, rows: np.ndarray,
                available: int) -> tuple[np.ndarray | None, str | None]:
    """Labels aligned with the selected samples, and where they came from."""
    if labels_path is None:
        if src.labels is None:
            return None, None
        return src.labels, f"{src.source} (labels/y key)"
    labels = read_labels(Path(labels_path))
    if len(labels) != available:
        raise CalibrationError(f"{labels_path}: {len(labels)} labels but {src.source} holds "
                               f"{available} samples")
    # The subset selects rows of the data; the labels follow the same rows.
    return (labels[rows] if len(rows) != len(labels) else labels), str(labels_path)


@dataclass
class EvalSamples:
    """Open, checked evaluation samples: iterate for ``{input name: array}`` feeds (batch 1)."""

    spec: EvalData
    source: CalibrationSource
    labels: np.ndarray | None
    labels_source: str | None
    rows: np.ndarray | None  # the selected rows when a subset is evaluated

    @property
    def count(self) -> int:
        return self.source.count

    @property
    def sha256(self) -> str:
        return self.source.sha256

    def __len__(self) -> int:
        return self.source.count

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(self.source)

    def first(self) -> dict[str, np.ndarray]:
        return next(iter(self.source))

    def info(self, *, warnings: bool = True) -> DataInfo:
        """The report's ``data`` block (``warnings=False`` when the caller reports them)."""
        src = self.source
        labels = (LabelsInfo(str(self.labels_source), int(len(self.labels)))
                  if self.labels is not None else None)
        return DataInfo(
            source=src.source, format=src.format, count=src.count, sha256=src.sha256,
            synthetic=src.synthetic, num=self.spec.num, seed=self.spec.seed,
            max_samples=self.spec.max_samples, role=self.spec.role, labels=labels,
            rows=None if self.rows is None else tuple(int(i) for i in self.rows),
            warnings=tuple(src.warnings) if warnings else (),
            statistics=getattr(src, "statistics", None),
        )


# ------------------------------------------------------------------------------ outputs


class OutputStack:
    """One model's outputs, per sample, in sample order (arrays kept as the model returned them).

    ``sample(i)`` gives sample ``i``'s outputs (one array per output, batch dim 1), the unit of
    per-sample metrics; ``stacked()`` concatenates each output over the samples (axis 0).
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self._samples: list[tuple[np.ndarray, ...]] = []

    def append(self, outputs: Sequence[np.ndarray]) -> None:
        if len(outputs) != len(self.names):
            raise ValueError(f"expected {len(self.names)} outputs, got {len(outputs)}")
        self._samples.append(tuple(np.asarray(o) for o in outputs))

    def __len__(self) -> int:
        return len(self._samples)

    def sample(self, i: int) -> tuple[np.ndarray, ...]:
        return self._samples[i]

    def stacked(self) -> list[np.ndarray]:
        """Each output over all samples, stacked on the batch axis (scalars get one)."""
        if not self._samples:
            return [np.empty((0,)) for _ in self.names]
        return [np.concatenate([s[j] if s[j].ndim else s[j].reshape(1) for s in self._samples])
                for j in range(len(self.names))]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for s in self._samples for a in s)

    def __getstate__(self) -> dict[str, Any]:
        return {"names": self.names, "samples": self._samples}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.names, self._samples = state["names"], state["samples"]


@dataclass(frozen=True)
class EvaluatedOutputs:
    """Both models' per-sample outputs of one evaluation (``Evaluation.outputs``)."""

    reference: OutputStack
    candidate: OutputStack


@dataclass(frozen=True)
class ReferenceOutputs:
    """The reference model's outputs on one sample selection, computed once and reused for
    every candidate (the tuning loop). Checked against the data's hash before use."""

    model_sha256: str
    data_sha256: str
    inputs: tuple[TensorSpec, ...]
    output_specs: tuple[TensorSpec, ...]
    outputs: OutputStack = field(compare=False, repr=False)  # identified by the two hashes


def run_pair(reference: rt.Model, candidate: rt.Model,
             samples: Iterable[Mapping[str, np.ndarray]]) -> EvaluatedOutputs:
    """Both models' per-sample outputs on ``samples`` (paired as :func:`evaluate` pairs them),
    for callers that compute metrics themselves (e.g. sweep validation shards).

    Raises:
        InputError: the signatures cannot be matched. CalibrationError: a sample does not fit.
    """
    pairing = Pairing.of(reference.inputs, reference.outputs, candidate.inputs, candidate.outputs)
    ref, cand = OutputStack(pairing.names), OutputStack(pairing.names)
    for _, r, c in paired_outputs(reference, candidate, samples, pairing):
        ref.append(r)
        cand.append(c)
    return EvaluatedOutputs(ref, cand)


def run_reference(reference: rt.Model, samples: EvalSamples) -> ReferenceOutputs:
    """Run the reference on every sample once.

    Raises:
        CalibrationError: a sample does not fit the model.
    """
    from edgeopt_runtime.manifest import sha256_file

    stack = OutputStack([s.name for s in reference.outputs])
    for i, feeds in enumerate(samples):
        stack.append(list(_run(reference, feeds, i).values()))
    return ReferenceOutputs(sha256_file(reference.path), samples.sha256,
                            tuple(reference.inputs), tuple(reference.outputs), stack)


def _run(model: rt.Model, feeds: Mapping[str, np.ndarray], i: int) -> Mapping[str, np.ndarray]:
    try:
        return model.run(feeds)
    except InputError as exc:
        raise CalibrationError(f"sample {i}: data does not fit the models: {exc}") from None


def paired_outputs(
    reference: rt.Model | None, candidate: rt.Model,
    samples: Iterable[Mapping[str, np.ndarray]], pairing: Pairing,
    cached: ReferenceOutputs | None = None,
) -> Iterator[tuple[int, tuple[np.ndarray, ...], tuple[np.ndarray, ...]]]:
    """Stream ``(index, reference outputs, candidate outputs)`` sample by sample.

    ``samples`` is any stream of feed dicts in reference input names (:class:`EvalSamples`, a
    ``CalibrationSource``, a shard of one).

    Outputs are in reference order (the candidate's reordered by ``pairing``). With ``cached``
    the reference is not run: its stored outputs for the same samples are used.

    Raises:
        CalibrationError: a sample does not fit the models.
    """
    for i, feeds in enumerate(samples):
        if cached is not None:
            ref = cached.outputs.sample(i)
        else:
            assert reference is not None
            ref = tuple(_run(reference, feeds, i).values())
        out = list(_run(candidate, pairing.candidate_feeds(feeds), i).values())
        yield i, ref, tuple(out[j] for j in pairing.outputs)


# ------------------------------------------------------------------------------ latency


def measure_latency(reference: rt.Model, candidate: rt.Model, feeds: Mapping[str, np.ndarray],
                    pairing: Pairing, *, runs: int = DEFAULT_LATENCY_RUNS,
                    warmup: int = LATENCY_WARMUP, label: str | None = None) -> LatencyPair:
    """Time reference and candidate the one way: interleaved on the same feed.

    ``warmup`` untimed pairs, then ``runs`` pairs (reference, candidate) each call timed on its
    own, so load from other processes hits both alike. ``label`` names the progress step.
    """
    import time

    from . import progress
    from .accelerators import runs_on_host_cpu

    cand_feeds = pairing.candidate_feeds(feeds)
    for _ in range(warmup):
        reference.run(feeds)
        candidate.run(cand_feeds)
    ref_ns, cand_ns = [], []
    clock = time.perf_counter_ns
    with progress.task(f"{label or 'latency'}: timing", runs, unit="pair") as step:
        for _ in range(runs):
            t0 = clock()
            reference.run(feeds)
            t1 = clock()
            candidate.run(cand_feeds)
            t2 = clock()
            ref_ns.append(t1 - t0)
            cand_ns.append(t2 - t1)
            step.update()
    where = ("this host's CPU (not the target device)" if runs_on_host_cpu(candidate.delegate)
             else f"this host, {candidate.delegate}")
    return LatencyPair(LatencyStats.from_ns(ref_ns), LatencyStats.from_ns(cand_ns),
                       threads=candidate.threads, backend=candidate.backend,
                       delegate=candidate.delegate, warmup=warmup, where=where,
                       method=LATENCY_METHOD.format(warmup=warmup))


# ------------------------------------------------------------------------------ evaluate


@dataclass(frozen=True)
class EvalOptions:
    """How much to measure. ``latency_runs=0`` skips latency (then ``reference`` may be None
    when cached outputs are given); ``keep_outputs`` keeps the per-sample outputs on the
    record."""

    latency_runs: int = DEFAULT_LATENCY_RUNS
    latency_warmup: int = LATENCY_WARMUP
    keep_outputs: bool = False
    # (output name or "*", kind) pairs overriding the inferred output kind (--output-kind)
    output_kinds: tuple[tuple[str, str], ...] = ()


def evaluate(
    reference: rt.Model | None, candidate: rt.Model, samples: EvalSamples, *,
    options: EvalOptions = EvalOptions(), cached: ReferenceOutputs | None = None,
    data_warnings: bool = True, label: str | None = None,
) -> Evaluation:
    """Run ``candidate`` against ``reference`` on ``samples``: drift, task metrics, latency.

    Args:
        reference: the float model (None only with ``cached`` and ``latency_runs=0``).
        candidate: the model under test.
        samples: the evaluation samples (:meth:`EvalData.open`).
        options: latency runs, whether to keep the outputs.
        cached: the reference's outputs on these samples (:func:`run_reference`).
        data_warnings: copy the data's warnings into the record's ``data`` block.
        label: what the progress lines call this evaluation (``arm-cpu: tflite int8``).

    Returns:
        The :class:`edgeopt.results.Evaluation` record.

    Raises:
        InputError: the signatures cannot be matched.
        CalibrationError: a sample does not fit the models; ``cached`` is for other data.
    """
    from . import progress
    from .drift import compare_outputs, task_metrics

    if cached is not None and cached.data_sha256 != samples.sha256:
        raise CalibrationError(
            f"cached reference outputs are for other data (sha256 {cached.data_sha256[:12]}, "
            f"this data {samples.sha256[:12]})")
    if reference is None and (cached is None or options.latency_runs):
        raise ValueError("evaluate: reference model needed (no cached outputs, or latency)")
    ref_in, ref_out = ((reference.inputs, reference.outputs) if reference is not None
                       else (cached.inputs, cached.output_specs))  # type: ignore[union-attr]
    pairing = Pairing.of(ref_in, ref_out, candidate.inputs, candidate.outputs)
    ref_stack = cached.outputs if cached is not None else OutputStack(pairing.names)
    cand_stack = OutputStack(pairing.names)
    with progress.task(f"{label or 'evaluation'}: validating", samples.count) as step:
        for _, ref, cand in paired_outputs(reference, candidate, samples, pairing, cached):
            if cached is None:
                ref_stack.append(ref)
            cand_stack.append(cand)
            step.update()
    refs, cands = ref_stack.stacked(), cand_stack.stacked()
    drift = tuple(OutputDrift.from_dict(d) for d in compare_outputs(
        refs, cands, pairing.names, kinds=dict(options.output_kinds)))
    task = None
    if samples.labels is not None:
        task = TaskMetrics.from_dict(task_metrics(refs, cands, samples.labels,
                                                  seed=samples.spec.seed))
    latency = None
    if options.latency_runs and reference is not None:
        latency = measure_latency(reference, candidate, samples.first(), pairing,
                                  runs=options.latency_runs, warmup=options.latency_warmup,
                                  label=label)
    outputs = EvaluatedOutputs(ref_stack, cand_stack) if options.keep_outputs else None
    return Evaluation(samples.info(warnings=data_warnings), drift, task, latency,
                      notes=pairing.notes, outputs=outputs)


@dataclass(frozen=True)
class EvaluationJob:
    """One evaluation as a value an executor can ship: call it to run it.

    The models are loaded and the data opened where the job runs; the result is the record
    (per-sample outputs only with ``options.keep_outputs``).
    """

    reference: ModelRef
    candidate: ModelRef
    data: EvalData
    options: EvalOptions = field(default_factory=EvalOptions)
    cached: ReferenceOutputs | None = field(default=None, repr=False)

    def __call__(self) -> Evaluation:
        candidate = self.candidate.load()
        need_ref = self.cached is None or self.options.latency_runs > 0
        reference = self.reference.load() if need_ref else None
        inputs = reference.inputs if reference is not None else self.cached.inputs  # type: ignore[union-attr]
        samples = self.data.open(inputs)
        return evaluate(reference, candidate, samples, options=self.options, cached=self.cached)


def run_job(job: EvaluationJob) -> Evaluation:
    """Run one job: the module-level function executors pickle by reference
    (``edgeopt.executors.Task(run_job, (job,), key=...)``)."""
    return job()
