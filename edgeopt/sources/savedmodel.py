"""TF SavedModel sources: the folder and its graph checked before TensorFlow loads it.

Symlinks out of the folder and special files are refused (``checks.check_tree``), as are graph
ops that touch files or call Python, and NaN variables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeopt_runtime.errors import ModelLoadError
from edgeopt_runtime.spec import TensorSpec

from .checks import check_tree, first_line, sha256_tree
from .registry import ModelSource, np_dtype_name, register_loader

SERVING_KEY = "serving_default"


def _load_savedmodel(p: Path, trust_model: bool) -> ModelSource:
    check_tree(p)
    from ..backends._frameworks import import_tf, stdout_to_stderr

    tf = import_tf()
    if not trust_model:
        check_savedmodel_ops(p)
    try:
        with stdout_to_stderr():
            loaded = tf.saved_model.load(str(p))
    except Exception as exc:  # tf raises OSError / ValueError / various tf.errors
        raise ModelLoadError(f"{p}: cannot load SavedModel: {first_line(exc)}") from None
    _check_variables_finite(tf, p)
    sigs = dict(getattr(loaded, "signatures", {}) or {})
    if SERVING_KEY in sigs:
        key = SERVING_KEY
    elif len(sigs) == 1:
        key = next(iter(sigs))
    else:
        have = ", ".join(sorted(sigs)) or "none"
        raise ModelLoadError(
            f"{p}: SavedModel has no {SERVING_KEY!r} signature (has: {have}); re-export it with "
            "signatures={'serving_default': fn}"
        )
    fn = sigs[key]
    in_sig = fn.structured_input_signature[1]
    out_sig = fn.structured_outputs
    if not isinstance(out_sig, dict) or not in_sig:
        raise ModelLoadError(f"{p}: signature {key!r} must take and return named tensors")
    inputs = tuple(_tf_spec(n, s) for n, s in sorted(in_sig.items()))
    outputs = tuple(_tf_spec(n, s) for n, s in sorted(out_sig.items()))
    # Keep the loaded object alive alongside its signature function.
    return ModelSource(
        "savedmodel", p, inputs, outputs, sha256_tree(p), handle=(loaded, fn), signature_key=key
    )


# Graph ops that reach outside the model (files, summaries, debuggers, Python callbacks). A
# SavedModel is a program: its initializer functions run during tf.saved_model.load and the
# converter traces the serving function. Checkpoint ops (SaveV2 / RestoreV2 /
# MergeV2Checkpoints) are in every SavedModel and only use paths the loader passes in.
UNTRUSTED_TF_OPS = frozenset({
    "WriteFile", "ReadFile", "MatchingFiles", "ImmutableConst", "PrintV2", "DecodeProtoV2",
    "PyFunc", "PyFuncStateless", "EagerPyFunc",
    "DebugIdentity", "DebugIdentityV2", "DebugIdentityV3", "DebugNanCount", "DebugNumericSummary",
    "DebugNumericSummaryV2",
    "CreateSummaryFileWriter", "CreateSummaryDbWriter", "WriteSummary", "WriteRawProtoSummary",
    "WriteScalarSummary", "WriteHistogramSummary", "WriteImageSummary", "WriteAudioSummary",
    "WriteGraphSummary", "ImportEvent",
    "TextLineDataset", "TFRecordDataset", "TFRecordDatasetV2", "FixedLengthRecordDataset",
    "FixedLengthRecordDatasetV2", "CSVDataset", "CSVDatasetV2", "ExperimentalCSVDataset",
    "SqlDataset", "ExperimentalSqlDataset", "LMDBDataset", "ExperimentalLMDBDataset",
    "SaveDataset", "SaveDatasetV2", "LoadDataset", "SnapshotDataset", "SnapshotDatasetV2",
    "DatasetToTFRecord", "ExperimentalDatasetToTFRecord",
    "InitializeTableFromTextFile", "InitializeTableFromTextFileV2",
})


def check_savedmodel_ops(p: Path) -> None:
    """Refuse a SavedModel whose graphs hold ops that read or write files or call Python.

    Parses ``saved_model.pb`` (every meta graph, graph node and library function) before
    TensorFlow loads it, so none of its functions has run.

    Raises:
        ModelLoadError: unparsable file, or an op from ``UNTRUSTED_TF_OPS`` (names
            ``--trust-model``).
    """
    from tensorflow.core.protobuf import saved_model_pb2

    try:
        saved = saved_model_pb2.SavedModel.FromString((p / "saved_model.pb").read_bytes())
    except Exception as exc:  # DecodeError, OSError
        raise ModelLoadError(
            f"{p}: cannot load SavedModel: saved_model.pb does not parse ({first_line(exc)}); "
            "the file is corrupt"
        ) from None
    for graph in saved.meta_graphs:
        nodes = [*graph.graph_def.node]
        for fn in graph.graph_def.library.function:
            nodes += fn.node_def
        bad = sorted({n.op for n in nodes} & UNTRUSTED_TF_OPS)
        if bad:
            raise ModelLoadError(
                f"{p}: the SavedModel holds op(s) {', '.join(bad)} that read or write files or "
                "call Python, refused for an untrusted model; if you trust this file, pass "
                "--trust-model (trust_model=True)"
            )


def _check_variables_finite(tf: Any, p: Path) -> None:
    """Refuse NaN weights: a damaged checkpoint can decode into NaN without any CRC error."""
    import numpy as np

    prefix = p / "variables" / "variables"
    if not prefix.with_suffix(".index").is_file():
        return
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        dtypes = reader.get_variable_to_dtype_map()
    except Exception:  # noqa: BLE001 - TF restored these variables already; nothing to add
        return
    bad = [n for n, d in sorted(dtypes.items())
           if d.is_floating and np.isnan(reader.get_tensor(n)).any()]
    if bad:
        raise ModelLoadError(
            f"{p}: variables {', '.join(map(repr, bad[:3]))} hold NaN values; the SavedModel is "
            "corrupt"
        )


def _tf_spec(name: str, spec: Any) -> TensorSpec:
    shape = tuple(None if d is None else int(d) for d in spec.shape.as_list())
    return TensorSpec(name, shape, np_dtype_name(spec.dtype))


register_loader("savedmodel", lambda p: (p / "saved_model.pb").is_file(), _load_savedmodel)
