"""Child process that runs onnxsim and onnx2tf on a staging copy: ``python -m
edgeopt.backends._onnx2tf_child JOB.json``.

Why a child: onnx2tf reads an untrusted graph with TensorFlow and ONNX Runtime (a crash or a
runaway allocation must not take the converter down), it calls ``sys.exit`` on errors, prints
coloured progress to stdout, and it reaches for the network. Here the network is cut before
onnx2tf is imported: every ``connect`` / DNS lookup raises and is recorded in the result, and
the sample-image download onnx2tf makes for its output check (fixed batch <= 20, 3-channel
images) is answered with the job's own calibration samples instead.

The job (JSON, written by ``edgeopt.backends.onnx2tf``)::

    {"onnx": "model.onnx", "out": "savedmodel", "simplify": true, "passes": true,
     "sample": "sample_nhwc.npy" | null, "options": {<onnx2tf.convert keyword arguments>},
     "validate": false}

The result (``result.json`` next to the job): onnx2tf's version, simplifier status, rewrites,
blocked network attempts, the per-tensor check (``validate``) and, on failure, the error.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

# keyword arguments of onnx2tf.convert a job may set (nothing that names code or a library)
ALLOWED_OPTIONS = {
    "overwrite_input_shape", "keep_shape_absolutely_input_names", "replace_to_pseudo_operators",
    "param_replacement_file", "check_onnx_tf_outputs_elementwise_close_full",
    "check_onnx_tf_outputs_elementwise_close_atol", "check_onnx_tf_outputs_elementwise_close_rtol",
    "disable_group_convolution", "enable_batchmatmul_unfold", "optimization_for_gpu_delegate",
    "keep_ncw_or_nchw_or_ncdhw_input_names",
}

BLOCKED: list[str] = []


class NetworkBlocked(OSError):
    """Raised instead of opening a network connection."""


def block_network() -> None:
    """Make every IP connection and name lookup in this process fail (and record it)."""

    def refuse(what: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            BLOCKED.append(f"{what} {args[1:2] if what.endswith('connect') else args[:1]}")
            raise NetworkBlocked(f"network access is disabled in edgeopt's onnx2tf run ({what})")

        return fail

    original_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            return refuse("socket.connect")(self, address)
        return original_connect(self, address)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = lambda self, address: connect(self, address)  # type: ignore[method-assign]
    socket.create_connection = refuse("socket.create_connection")  # type: ignore[assignment]
    socket.getaddrinfo = refuse("socket.getaddrinfo")  # type: ignore[assignment]
    os.environ.update(HTTP_PROXY="", HTTPS_PROXY="", http_proxy="", https_proxy="",
                      NO_PROXY="*")


def _local_sample(path: str | None) -> Any:
    import numpy as np

    def sample() -> Any:
        if path is None:  # no calibration data given: seeded images in onnx2tf's own shape
            return np.random.default_rng(0).uniform(0, 1, (20, 128, 128, 3)).astype(np.float32)
        return np.load(path, allow_pickle=False)

    return sample


def _simplify(path: Path, result: dict[str, Any]) -> None:
    import onnx

    try:
        import onnxsim
    except ImportError:
        result["simplifier"] = "onnxsim not installed"
        return
    model = onnx.load(str(path))
    try:
        simplified, ok = onnxsim.simplify(model)
    except Exception as exc:  # noqa: BLE001 - onnxsim raises RuntimeError / its own types
        text = str(exc).strip().splitlines()
        result["simplifier"] = f"failed: {text[0][:200] if text else type(exc).__name__}"
        return
    if not ok:
        result["simplifier"] = "check failed: kept the unsimplified graph"
        return
    onnx.save(simplified, str(path))
    result["simplifier"] = f"onnxsim {getattr(onnxsim, '__version__', '?')}"


def _passes(path: Path, result: dict[str, Any]) -> None:
    import onnx

    from .onnx_rewrites import constant_gather_as_slice, explicit_maxpool_padding

    model = onnx.load(str(path))
    counts = explicit_maxpool_padding(model)
    result["maxpool_padding"] = counts
    result["gather_as_slice"] = constant_gather_as_slice(model)
    if any(counts.values()) or result["gather_as_slice"]:
        onnx.save(model, str(path))


def _capture_validation(o2t: Any, result: dict[str, Any]) -> None:
    """Record onnx2tf's per-tensor ONNX-vs-TF check (``check_results``) in graph order."""
    original = o2t.onnx_tf_tensor_validation

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        checked = original(*args, **kwargs)
        rows = []
        for (onnx_name, _tf_name), value in checked.items():
            flag, err = value[1], value[2]
            rows.append({"tensor": str(onnx_name), "matched": int(flag),
                         "max_abs_error": float(err) if isinstance(err, (int, float)) or
                         hasattr(err, "__float__") else None})
        result["validation"] = rows
        return checked

    o2t.onnx_tf_tensor_validation = wrapped


class _OpImports:
    """``importlib`` as onnx2tf's converter module sees it: each ``onnx2tf.ops.<Op>`` module
    comes back with its ``make_node`` wrapped to record the Keras layers it made."""

    def __init__(self, record: Any) -> None:
        import importlib

        self._importlib = importlib
        self._record = record

    def __getattr__(self, name: str) -> Any:
        return getattr(self._importlib, name)

    def import_module(self, name: str, *args: Any) -> Any:
        module = self._importlib.import_module(name, *args)
        if name.startswith("onnx2tf.ops.") and not getattr(module, "_edgeopt_wrapped", False):
            original, record = module.make_node, self._record

            def make_node(*a: Any, **kw: Any) -> Any:
                made = original(*a, **kw)
                try:
                    record(kw["graph_node"], kw["tf_layers_dict"])
                except Exception:  # noqa: BLE001 - the name map is best effort
                    pass
                return made

            module.make_node = make_node
            module._edgeopt_wrapped = True
        return module


def _node_layers(o2t: Any) -> dict[str, list[Any]]:
    """Record, per ONNX node (by onnx2tf's sanitized name), the Keras layers onnx2tf built for
    it: walking back from the node's output tensors to its input tensors (or to tensors of
    earlier nodes). TFLite tensor names carry these layer names (``model/tf.math.add_3/Add``),
    not the ONNX node's, so ``--keep-float`` on ONNX node names maps through this."""
    layers: dict[str, list[Any]] = {}
    claimed: set[int] = set()

    def tensor(tf_layers_dict: dict[str, Any], name: str) -> Any:
        entry = tf_layers_dict.get(name)
        return entry.get("tf_node") if isinstance(entry, dict) else None

    def record(node: Any, tf_layers_dict: dict[str, Any]) -> None:
        stop = {id(t) for i in node.inputs if (t := tensor(tf_layers_dict, i.name)) is not None}
        outs = [t for o in node.outputs if (t := tensor(tf_layers_dict, o.name)) is not None]
        found: list[Any] = []
        seen: set[int] = set()
        stack = list(outs)
        while stack:
            t = stack.pop()
            if id(t) in seen or id(t) in stop or id(t) in claimed:
                continue
            seen.add(id(t))
            history = getattr(t, "_keras_history", None)
            if history is None or type(history.layer).__name__ == "InputLayer":
                continue
            if all(layer is not history.layer for layer in found):
                found.append(history.layer)
            stack.extend(history.layer._inbound_nodes[history.node_index].keras_inputs)
        claimed.update(id(t) for t in outs)
        layers.setdefault(str(node.name), []).extend(found)

    o2t.importlib = _OpImports(record)
    return layers


def run(job_path: Path, result: dict[str, Any]) -> None:
    job = json.loads(job_path.read_text())
    block_network()
    onnx_path = job_path.parent / job["onnx"]
    if job.get("simplify", True):
        _simplify(onnx_path, result)
    if job.get("passes", True):
        _passes(onnx_path, result)
    import onnx2tf
    import onnx2tf.onnx2tf as o2t
    import onnx2tf.utils.common_functions as common

    result["onnx2tf"] = getattr(onnx2tf, "__version__", "?")
    o2t.download_test_image_data = _local_sample(job.get("sample"))
    common.download_test_image_data = o2t.download_test_image_data
    if job.get("validate"):
        _capture_validation(o2t, result)
    layers = _node_layers(o2t)
    options = {k: v for k, v in (job.get("options") or {}).items() if k in ALLOWED_OPTIONS}
    o2t.convert(
        input_onnx_file_path=str(onnx_path),
        output_folder_path=str(job_path.parent / job["out"]),
        output_signaturedefs=True,
        not_use_onnxsim=True,  # simplified above, in-process (onnx2tf would look on PATH)
        non_verbose=not job.get("verbose"),
        **options,
    )
    # layer names are final only now (onnx2tf renames the output layers at the end)
    result["node_layers"] = {node: [layer.name for layer in found]
                             for node, found in layers.items()}
    _rename(job_path.parent / job["out"], job_path.parent / job["named"], job, result)
    result["ok"] = True


def _rename(folder: Path, out: Path, job: dict[str, Any], result: dict[str, Any]) -> None:
    """Re-export onnx2tf's SavedModel with the ONNX model's input and output names.

    onnx2tf's ``serving_default`` names inputs like the ONNX graph (sanitized) but outputs
    ``output_0``, ``output_1``, ...; apps address outputs by the ONNX names, so the signature
    is rebuilt: inputs in ONNX order, outputs keyed by the ONNX output names.
    """
    import tensorflow as tf

    loaded = tf.saved_model.load(str(folder))
    fn = loaded.signatures["serving_default"]
    given = fn.structured_input_signature[1]
    produced = sorted(fn.structured_outputs, key=lambda k: int(k.rsplit("_", 1)[-1]))
    inputs, outputs = job["inputs"], job["outputs"]
    if len(given) != len(inputs) or len(produced) != len(outputs):
        raise RuntimeError(f"onnx2tf made {len(given)} inputs / {len(produced)} outputs, the "
                           f"ONNX model has {len(inputs)} / {len(outputs)}")
    keys = [_match(name, list(given)) for name in inputs]
    specs = [tf.TensorSpec(given[k].shape, given[k].dtype, name=name)
             for k, name in zip(keys, inputs, strict=True)]

    def call(*xs: Any) -> dict[str, Any]:
        r = fn(**dict(zip(keys, xs, strict=True)))
        return {name: r[key] for name, key in zip(outputs, produced, strict=True)}

    module = tf.Module()
    module.inner = loaded  # keeps the variables tracked
    module.f = tf.function(call, input_signature=specs, autograph=False)
    tf.saved_model.save(module, str(out), signatures={"serving_default": module.f})
    result["signature"] = {"inputs": dict(zip(inputs, keys, strict=True)),
                           "outputs": dict(zip(outputs, produced, strict=True))}


def _match(onnx_name: str, keys: list[str]) -> str:
    """onnx2tf's signature key for ONNX input ``onnx_name`` (it replaces ':' and a leading
    '/' the way TF names require)."""
    import re

    for candidate in (onnx_name, onnx_name.replace(":", "_"),
                      re.sub("^/", "wa/", onnx_name.replace(":", "_"))):
        if candidate in keys:
            return candidate
    raise RuntimeError(f"onnx2tf's SavedModel has no input for ONNX input {onnx_name!r} "
                       f"(it has {keys})")


def main(argv: list[str]) -> int:
    job_path = Path(argv[0])
    result: dict[str, Any] = {"ok": False}
    try:
        run(job_path, result)
    except SystemExit as exc:  # onnx2tf reports errors with sys.exit(1)
        result["error"] = f"onnx2tf stopped (exit {exc.code})"
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which decides
        text = str(exc).strip().splitlines()
        result["error"] = f"{type(exc).__name__}: {text[0][:300] if text else ''}".strip()
        result["traceback"] = traceback.format_exc()[-4000:]
    result["network_blocked"] = list(BLOCKED)
    (job_path.parent / "result.json").write_text(json.dumps(result, indent=1))
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
