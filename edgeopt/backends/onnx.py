"""ONNX backend: TF sources through tf2onnx, ONNX sources as they are; then ONNX Runtime.

Steps: float model (tf2onnx ``from_function``, or the cleaned source upgraded to opset >= 13)
-> ``quant_pre_process`` (symbolic shape inference first; when that fails — it does on real
transformers, and when sympy is absent — again with ``skip_symbolic_shape=True``; when even that
fails, quantize the float model as it is) -> ``quantize_static`` (QDQ / QOperator, per-channel,
the profile's activation / weight types, MinMax / Entropy / Percentile calibration) or
``quantize_dynamic`` when ``profile.onnx.scheme == "dynamic"``.

Measured on this host (ORT 1.32, MobileNetV2-224, 1 thread): QDQ int8 with uint8 activations
runs 2.2-2.3x faster than float, with int8 activations only 1.3x — see targets/arm-cpu.toml.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from edgeopt_runtime.errors import CalibrationError, UnsupportedOpError
from onnxruntime.quantization import CalibrationDataReader
from onnxruntime.quantization import calibrate as q_cal

from ..recipes import Recipe
from ..recipes.ranges import BadRange, bad_ranges
from ..recipes.ranges import summary as range_summary
from ..sources import ModelSource, clean_onnx
from ..targets import OnnxScheme, QuantFormat, QuantType, TargetProfile
from . import Backend, BuildRequest, Built, Shapes, keep_float_names, register_backend
from ._frameworks import import_onnx, import_tf2onnx, log_failure, stdout_to_stderr

TF2ONNX_OPSET = 17
MIN_QDQ_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear need the axis attribute
# ORT holds this many samples' calibration outputs at once (see _Reader). Entropy / Percentile
# keep whole activations: 16 samples of a 224x224 CNN are tens to hundreds of MiB.
MAX_CALIB_CHUNK = 16
LARGE_WEIGHT = 1e20  # above this, a weight is named as the likely cause of a broken artifact
WEIGHT_BLOCK = 32  # input channels per weight-only scale (MatMulNBits block_size)
TRANSFORM_SAMPLES = 128  # calibration samples a graph transform's channel statistics read


class OnnxBackend:
    """Keras / SavedModel / ONNX sources to int8 ``.onnx``."""

    name = "onnx"
    extension = ".onnx"

    def refuses(self, source: ModelSource) -> str | None:
        return None

    def precisions(self, profile: TargetProfile) -> list[str]:
        return [{OnnxScheme.DYNAMIC: "dynamic", OnnxScheme.WEIGHT_ONLY: "weight-only"}.get(
            profile.onnx.scheme, "int8")]

    def build_float(self, source: ModelSource, input_shapes: Shapes, workdir: Path) -> Path:
        tag = "dynamic" if any(d is None for s in input_shapes.values() for d in s) else "static"
        out = workdir / f"float32_{tag}.onnx"
        if out.is_file():
            return out
        onnx = import_onnx()
        if source.is_tensorflow:
            model = _from_tf(source, input_shapes)
        else:
            model = onnx.ModelProto()
            model.CopyFrom(source.handle)
            model = _prepare_onnx(onnx, model, input_shapes)
        onnx.save(model, str(out))
        return out

    def build(self, req: BuildRequest) -> Built:
        """Build ``req``'s recipe: pre-process, transforms (checked in float), exclusions,
        then ORT static / dynamic / weight-only quantization."""
        recipe = req.resolved(self.name)
        # absolute: ORT's pre-processing runs in a scratch working directory (_scratch_cwd)
        req = replace(req, workdir=req.workdir.absolute(), out_path=req.out_path.absolute())
        float_path = self.build_float(req.source, req.input_shapes, req.workdir)
        details: dict[str, Any] = {"recipe": recipe.to_dict(), "recipe_key": recipe.key()}
        notes: list[str] = []
        onnx = import_onnx()
        float_nodes: list[str] = []
        if recipe.transforms:  # on the exporter's graph, before ORT's fusions rename nodes
            float_path, float_nodes = _transform(req, recipe, float_path, details, notes)
        pre = _preprocess(float_path, req.workdir, details)
        model = onnx.load(str(pre))
        nodes = [n.name for n in model.graph.node]
        # ORT's pre-processing may fuse a node and name the result "<name>/<Fusion>..."
        exclude = [n for n in nodes if any(n == f or n.startswith(f"{f}/") for f in float_nodes)]
        matched = keep_float_names(nodes, recipe, details)
        if recipe.exclude:
            from ..recipes.presets import excluded_nodes

            preset = excluded_nodes(model, recipe.exclude)
            details["excluded_by_preset"] = len(preset)
            exclude += preset
        del model
        exclude = list(dict.fromkeys([*exclude, *matched]))
        spec = req.profile.onnx
        first = _quantize(req, recipe, pre, exclude, details, notes)
        _check_runs(req, first, float_path)
        details.update(
            activation_type=recipe.activation_type.value if recipe.mode == "static" else None,
            weight_type=recipe.weight_type.value,
            quant_format=recipe.quant_format.value if recipe.mode == "static"
            else spec.quant_format.value,
            calibration_method=recipe.calibration_method.value
            if recipe.mode == "static" else None,
            ops=dict(op_counts(req.out_path)),
        )
        return Built(req.out_path, self.name, recipe.precision, details, notes, float_model=pre)


@contextlib.contextmanager
def _scratch_cwd(workdir: Path, model: Path | None = None) -> Iterator[Path | None]:
    """Run an ORT step (pre-processing, quantization) with the working directory in a scratch
    folder.

    ``quant_pre_process``'s symbolic shape inference saves ``sym_shape_infer_temp.onnx`` plus a
    ``<uuid>`` external-data file into the *current* directory when it gives up (it does on
    real transformers: ~90 MB of weights for a MiniLM), and none of that may land in the
    user's folder. Only file-to-file steps run here, with absolute paths (calibration data is
    opened by relative paths elsewhere), and the scratch folder (inside ``workdir``) is removed
    afterwards. The working directory is process-wide: builds in one process are never
    concurrent (the tuning loop runs parallel candidates in worker processes).

    With ``model``, yields a private link to it inside the scratch folder (its external-data
    files linked beside it): ``quantize_static`` / ``quantize_dynamic`` write
    ``<model>-inferred.onnx`` next to their input and delete it afterwards, so parallel
    candidates quantizing the same pre-processed model would delete each other's file.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="ort-cwd-", dir=workdir))
    previous = os.getcwd()
    private = None
    if model is not None:
        private = scratch / model.name
        for f in [model.name, *_external_files(model)]:
            os.symlink((model.parent / f).absolute(), scratch / f)
    os.chdir(scratch)
    try:
        yield private
    finally:
        os.chdir(previous)
        shutil.rmtree(scratch, ignore_errors=True)


def _external_files(model: Path) -> list[str]:
    """The external-data files ``model``'s initializers name (relative to its folder)."""
    onnx = import_onnx()
    proto = onnx.load(str(model), load_external_data=False)
    names = {e.value for t in proto.graph.initializer
             if t.data_location == onnx.TensorProto.EXTERNAL
             for e in t.external_data if e.key == "location"}
    return sorted(n for n in names if "/" not in n and n != model.name)


def _samples(req: BuildRequest, limit: int) -> list[dict[str, np.ndarray]]:
    """Up to ``limit`` calibration samples as feeds in the model's input dtypes."""
    dtypes = {s.name: np.dtype(s.dtype) for s in req.source.inputs}
    out = []
    for sample in req.calib or ():
        out.append({k: np.asarray(v, dtype=dtypes[k]) for k, v in sample.items()})
        if len(out) >= limit:
            break
    return out


def _transform(req: BuildRequest, recipe: Recipe, pre: Path, details: dict[str, Any],
               notes: list[str]) -> tuple[Path, list[str]]:
    """Apply the recipe's graph transforms to the float model ``pre`` (saved by recipe key).

    Raises:
        CalibrationError: the transforms need calibration data and none was given.
        UnsupportedOpError: a transform's result is not float-equivalent (the check refused it).
    """
    from ..recipes import transforms as tr

    onnx = import_onnx()
    # Keyed by the transforms alone: candidates that differ only in keep-float or quantization
    # options (the tuning loop's reverts) reuse the rewritten graph and its float check.
    key = hashlib.sha256(json.dumps([pre.name, [t.to_dict() for t in recipe.transforms]],
                                    sort_keys=True).encode()).hexdigest()[:16]
    out = req.workdir / f"{pre.stem}_t{key}.onnx"
    meta = out.with_suffix(".json")
    if out.is_file() and meta.is_file():
        saved = json.loads(meta.read_text())
        notes += saved["notes"]
        details["transforms"] = saved["details"]
        return out, list(saved["float_nodes"])
    samples = _samples(req, TRANSFORM_SAMPLES)
    if not samples:
        raise CalibrationError(f"{req.source.path}: recipe transforms "
                               f"({', '.join(t.name.value for t in recipe.transforms)}) need "
                               "calibration data: pass --calib")
    try:
        result = tr.apply(onnx.load(str(pre)), recipe.transforms, samples)
    except tr.TransformError as exc:
        raise UnsupportedOpError(f"{req.source.path}: {exc}") from None
    # temp name + rename: parallel candidates may rewrite the same graph at the same time
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.onnx")
    onnx.save(result.model, str(tmp))
    os.replace(tmp, out)
    notes += result.notes
    details["transforms"] = result.details
    tmp_meta = meta.with_name(f".{meta.name}.{os.getpid()}")
    tmp_meta.write_text(json.dumps({"notes": result.notes, "details": result.details,
                                    "float_nodes": list(result.float_nodes)}, default=str))
    os.replace(tmp_meta, meta)
    return out, result.float_nodes


def _quantize(req: BuildRequest, recipe: Recipe, pre: Path, exclude: list[str],
              details: dict[str, Any], notes: list[str]) -> dict[str, np.ndarray] | None:
    """Quantize ``pre`` into ``req.out_path`` as the recipe says.

    Returns:
        One input sample to test-run the result with (None when no data was read).

    Raises:
        UnsupportedOpError: ONNX Runtime could not quantize the model.
        CalibrationError: the calibration data changed while in use.
    """
    from onnxruntime import quantization as q

    first: dict[str, np.ndarray] | None = None
    try:
        with stdout_to_stderr(), _quiet_ort_logging():
            if recipe.mode == "dynamic":
                with _scratch_cwd(req.workdir, pre) as private:
                    q.quantize_dynamic(
                        str(private), str(req.out_path),
                        per_channel=recipe.per_channel,
                        reduce_range=recipe.reduce_range,
                        weight_type=_qtype(q, recipe.weight_type),
                        nodes_to_exclude=exclude,
                        op_types_to_quantize=list(recipe.op_types) or None,
                        extra_options={"MatMulConstBOnly": True},
                    )
                first = next(iter(_samples(req, 1)), None)
            elif recipe.mode == "weight-only":
                with _scratch_cwd(req.workdir, pre) as private:
                    _weight_only(private, req.out_path, recipe, exclude, details)
                first = next(iter(_samples(req, 1)), None)
            else:
                reader = _Reader(req)
                ranges, bad = _calibrate(req, recipe, pre, reader)
                if bad:
                    exclude = exclude + _touching(pre, [b.tensor for b in bad])
                    details["kept_float_ranges"] = [b.to_dict() for b in bad]
                    name, value = _largest_weight(pre)
                    hint = (f"; the float model holds a weight of magnitude {value:.3g} "
                            f"({name!r}): is the source corrupt?" if value > LARGE_WEIGHT else "")
                    notes.append(range_summary(bad) + hint)
                cache = req.workdir / f"calib_{recipe.key()}_{req.out_path.stem}.json"
                q_cal.save_tensors_data(ranges, cache)
                # ranges are computed: no calibration data is read in there
                with _scratch_cwd(req.workdir, pre) as private:
                    q.quantize_static(
                        str(private), str(req.out_path), None,
                        quant_format=q.QuantFormat.QDQ
                        if recipe.quant_format is QuantFormat.QDQ else q.QuantFormat.QOperator,
                        per_channel=recipe.per_channel,
                        reduce_range=recipe.reduce_range,
                        activation_type=_qtype(q, recipe.activation_type),
                        weight_type=_qtype(q, recipe.weight_type),
                        nodes_to_exclude=exclude,
                        op_types_to_quantize=list(recipe.op_types) or None,
                        calibrate_method=_method(q, recipe.calibration_method.value),
                        calibration_cache_path=str(cache.absolute()),
                    )
                first = reader.first
    except (CalibrationError, UnsupportedOpError):
        raise
    except Exception as exc:  # ORT raises ValueError / RuntimeError / its own Fail types
        text = str(exc).strip().splitlines()
        log_failure(f"ONNX {recipe.precision} quantization of {req.source.path}", exc)
        raise UnsupportedOpError(
            f"{req.source.path}: ONNX {recipe.precision} quantization failed: "
            f"{text[0] if text else type(exc).__name__}"
        ) from None
    details["excluded_nodes"] = len(exclude)
    return first


def _op_types(recipe: Recipe) -> list[str]:
    """The op types ``quantize_static`` quantizes (and so calibrates): ORT's default list."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return list(recipe.op_types) or sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


def _calibrate(req: BuildRequest, recipe: Recipe, pre: Path,
               reader: _Reader) -> tuple[Any, list[BadRange]]:
    """Calibration ranges for static quantization, with unquantizable tensors left out.

    A min/max pass finds every tensor whose range is non-finite or absurd (``edgeopt.recipes.
    ranges``); entropy / percentile then run a second pass over the other tensors only (their
    histograms crash on such tensors: "cannot convert float NaN to integer", "Maximum allowed
    size exceeded"). Both passes are chunked (see ``_Reader``).

    Returns:
        (ORT ``TensorsData`` of the method, the tensors left out).
    """
    op_types = _op_types(recipe)
    aug = req.workdir / f"augmented_{req.out_path.stem}.onnx"
    scan = _collect(_calibrator("minmax", pre, op_types, aug, set()), reader)
    bad = bad_ranges({k: (float(np.min(v.range_value[0])), float(np.max(v.range_value[1])))
                      for k, v in scan.data.items()})
    skip = {b.tensor for b in bad}
    method = recipe.calibration_method.value
    if method == "minmax":
        data = {k: v for k, v in scan.data.items() if k not in skip}
        return q_cal.TensorsData(q_cal.CalibrationMethod.MinMax, data), bad
    ranges = _collect(_calibrator(method, pre, op_types, aug, skip), reader)
    return ranges, bad


def _calibrator(method: str, model: Path, op_types: list[str], aug: Path, skip: set[str]) -> Any:
    """ORT's calibrator for ``method`` (create_calibrator's defaults), minus ``skip`` tensors."""
    base = {"minmax": q_cal.MinMaxCalibrater, "entropy": q_cal.EntropyCalibrater,
            "percentile": q_cal.PercentileCalibrater}[method]
    kwargs = {"entropy": {"num_bins": 128, "num_quantized_bins": 128},
              "percentile": {"num_bins": 2048, "percentile": 99.999, "symmetric": True},
              }.get(method, {})

    class _Skipping(base):  # type: ignore[misc, valid-type]
        def select_tensors_to_calibrate(self, model: Any) -> tuple[set[str], dict]:
            tensors, infos = super().select_tensors_to_calibrate(model)
            return tensors - skip, infos

    aug.unlink(missing_ok=True)
    cal = _Skipping(str(model), op_types, augmented_model_path=str(aug), **kwargs)
    cal.augment_graph()
    cal.create_inference_session()
    return cal


def _collect(cal: Any, reader: _Reader) -> Any:
    """One chunked pass of ``reader`` through ``cal``; its ``TensorsData``."""
    count = len(reader)
    if not count:
        raise CalibrationError("static ONNX quantization needs calibration data: pass --calib")
    chunk = calib_chunk(count)
    for start in range(0, count, chunk):
        reader.set_range(start, start + chunk)
        cal.collect_data(reader)
    return cal.compute_data()


def _touching(path: Path, tensors: list[str]) -> list[str]:
    """Names of the nodes that produce or read any of ``tensors``."""
    wanted = set(tensors)
    graph = import_onnx().load(str(path), load_external_data=False).graph
    return [n.name for n in graph.node if wanted & (set(n.input) | set(n.output))]


def _weight_only(pre: Path, out: Path, recipe: Recipe, exclude: list[str],
                 details: dict[str, Any]) -> None:
    """int8 weights of the weight MatMuls (ORT's weight-only quantizer: ``MatMulNBits`` with
    8 bits, blocks of ``WEIGHT_BLOCK`` input channels, float activations)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    onnx = import_onnx()
    config = DefaultWeightOnlyQuantConfig(block_size=WEIGHT_BLOCK, is_symmetric=True, bits=8,
                                          op_types_to_quantize=("MatMul",))
    quantizer = MatMulNBitsQuantizer(onnx.load(str(pre)), bits=8, block_size=WEIGHT_BLOCK,
                                     is_symmetric=True, nodes_to_exclude=exclude,
                                     algo_config=config)
    quantizer.process()
    onnx.save(quantizer.model.model, str(out))
    details["weight_only_matmuls"] = sum(n.op_type == "MatMulNBits"
                                         for n in quantizer.model.model.graph.node)


def _check_runs(req: BuildRequest, sample: dict[str, np.ndarray] | None,
                float_path: Path) -> None:
    """Run the produced model once on ``sample`` (the first calibration sample, kept by the
    reader: no extra pass over the data), ORT's own log silenced.

    A model whose weights are absurd (a damaged file can hold a bias of 2e38) quantizes into
    one that ONNX Runtime refuses to run; say so here, in one line with the likely cause,
    instead of failing later with ORT's log lines on stderr.

    Raises:
        UnsupportedOpError: ONNX Runtime cannot load or run the produced model.
    """
    import onnxruntime as ort

    if sample is None:
        return
    options = ort.SessionOptions()
    options.log_severity_level = 4  # errors reach us as exceptions; keep stderr clean
    options.intra_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(req.out_path), options,
                                       providers=["CPUExecutionProvider"])
        session.run(None, sample)
    except Exception as exc:  # noqa: BLE001 - ORT raises its own Fail / RuntimeException types
        text = str(exc).strip().splitlines()
        log_failure(f"running the ONNX {req.precision} model of {req.source.path}", exc)
        why = text[-1].split("Status Message:")[-1].strip() if text else type(exc).__name__
        name, value = _largest_weight(float_path)
        hint = (f"; the float model holds a weight of magnitude {value:.3g} ({name!r}): is the "
                "source corrupt?" if value > LARGE_WEIGHT else "")
        raise UnsupportedOpError(
            f"{req.source.path}: the ONNX {req.precision} model does not run in ONNX Runtime: "
            f"{why}{hint}"
        ) from None


def _largest_weight(path: Path) -> tuple[str, float]:
    """Name and magnitude of the largest finite float initializer value of an ONNX file."""
    from onnx import numpy_helper

    best = ("", 0.0)
    for t in import_onnx().load(str(path)).graph.initializer:
        values = numpy_helper.to_array(t)
        if values.dtype.kind == "f" and values.size:
            finite = np.abs(values[np.isfinite(values)])
            if finite.size and float(finite.max()) > best[1]:
                best = (t.name, float(finite.max()))
    return best


def _qtype(q: Any, t: QuantType) -> Any:
    return q.QuantType.QUInt8 if t is QuantType.UINT8 else q.QuantType.QInt8


def _method(q: Any, name: str) -> Any:
    return {
        "minmax": q.CalibrationMethod.MinMax,
        "entropy": q.CalibrationMethod.Entropy,
        "percentile": q.CalibrationMethod.Percentile,
    }[name]


def calib_chunk(count: int, limit: int | None = None) -> int:
    """Samples per ORT ``collect_data`` call: the largest divisor of ``count`` <= ``limit``.

    ORT's ``CalibStridedMinMax`` needs the chunk size to divide the sample count exactly.

    Args:
        count: number of calibration samples (>= 1).
        limit: largest chunk allowed (default ``MAX_CALIB_CHUNK``).

    Returns:
        The chunk size (1 when ``count`` is a prime above ``limit``).
    """
    limit = MAX_CALIB_CHUNK if limit is None else limit
    return max(d for d in range(1, max(1, min(count, limit)) + 1) if count % d == 0)


class _Reader(CalibrationDataReader):
    """ORT calibration reader: one streaming pass over the samples, served in chunks.

    ``quantize_static`` keeps the outputs of every sample of one ``collect_data`` call in memory
    until the call ends (MinMax: per-tensor min/max; Entropy / Percentile: every intermediate
    activation). With ``extra_options={"CalibStridedMinMax": chunk}`` ORT instead calls
    ``set_range(start, end)`` and ``collect_data`` per chunk, keeping only running ranges or
    histograms between chunks, so memory no longer grows with the number of samples. ORT walks
    the ranges in order, so the one pass continues from chunk to chunk (no re-reading).
    """

    def __init__(self, req: BuildRequest) -> None:
        self._dtypes = {s.name: np.dtype(s.dtype) for s in req.source.inputs}
        self._calib = req.calib
        self._count = len(req.calib) if req.calib is not None else 0
        self._it = iter(req.calib or ())
        self._pos = 0  # index of the next sample the pass yields
        self._end = self._count
        self.first: dict[str, np.ndarray] | None = None  # kept for a test run of the result

    def __len__(self) -> int:
        return self._count

    def set_range(self, start_index: int, end_index: int) -> None:
        """Serve samples ``start_index`` .. ``end_index - 1`` until the next ``set_range``."""
        if start_index != self._pos:  # not the next chunk: start a new pass and skip ahead
            self._it, self._pos = iter(self._calib or ()), 0
            for _ in range(start_index):
                next(self._it, None)
            self._pos = start_index
        self._end = min(end_index, self._count)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= self._end:
            return None
        sample = next(self._it, None)
        if sample is None:
            return None
        self._pos += 1
        if self._pos == self._count:
            next(self._it, None)  # end the pass: the source re-checks the data's hash there
        feeds = {k: np.asarray(v, dtype=self._dtypes[k]) for k, v in sample.items()}
        if self.first is None:
            self.first = feeds
        return feeds


class _quiet_ort_logging:  # noqa: N801 - used as a context manager
    """ORT's quantizer logs warnings through the root logger; keep them at ERROR meanwhile."""

    def __enter__(self) -> None:
        self._root = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().setLevel(self._root)


def _from_tf(source: ModelSource, shapes: Shapes) -> Any:
    """tf2onnx ``from_function`` (``from_keras`` fails on Keras 3: KeyError keras_tensor_N)."""
    from ._tfgraph import tf_function

    tf2onnx = import_tf2onnx()
    fn, spec = tf_function(source, shapes)
    try:
        with stdout_to_stderr():
            model, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=TF2ONNX_OPSET)
    except Exception as exc:  # tf2onnx raises ValueError / KeyError / RuntimeError
        text = str(exc).strip().splitlines()
        log_failure(f"tf2onnx conversion of {source.path}", exc)
        raise UnsupportedOpError(
            f"{source.path}: tf2onnx could not convert the model: "
            f"{text[0] if text else type(exc).__name__}"
        ) from None
    return model


def _prepare_onnx(onnx: Any, model: Any, shapes: Shapes) -> Any:
    """Old opsets up to 13, initializer-inputs dropped, and static dims where the target wants."""
    model, _ = clean_onnx(model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_QDQ_OPSET:
        model = onnx.version_converter.convert_version(model, MIN_QDQ_OPSET)
    from .onnx_rewrites import static_inputs

    static_inputs(model, shapes)
    return onnx.shape_inference.infer_shapes(model)


def _preprocess(float_path: Path, workdir: Path, details: dict[str, Any]) -> Path:
    """``quant_pre_process`` with the fallbacks described in the module docstring."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = workdir / f"{float_path.stem}_pre.onnx"
    if out.is_file():
        details["preprocess"] = (workdir / f"{out.name}.mode").read_text()
        return out
    attempts = (("symbolic", False), ("onnx-shape-only", True))
    mode = "none"
    # temp name + rename: parallel candidates of the tuning loop pre-process the same model
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.onnx")
    for name, skip_symbolic in attempts:
        try:
            with stdout_to_stderr(), _quiet_ort_logging(), _scratch_cwd(workdir):
                quant_pre_process(str(float_path.absolute()), str(tmp.absolute()),
                                  skip_symbolic_shape=skip_symbolic)
            mode = name
            break
        except Exception:  # ImportError (no sympy), "Incomplete symbolic shape inference", ...
            tmp.unlink(missing_ok=True)
    if mode == "none":
        tmp.write_bytes(float_path.read_bytes())
    mode_file = workdir / f"{out.name}.mode"  # written first: readers check `out` only
    mode_tmp = mode_file.with_name(f".{mode_file.name}.{os.getpid()}")
    mode_tmp.write_text(mode)
    os.replace(mode_tmp, mode_file)
    os.replace(tmp, out)
    details["preprocess"] = mode
    return out


def op_counts(path: Path) -> Counter[str]:
    """Node count per op type of an ONNX file (QuantizeLinear / DequantizeLinear included)."""
    onnx = import_onnx()
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


BACKEND: Backend = OnnxBackend()
register_backend(BACKEND)
