"""The runtime stays light: no tensorflow, keras or onnx in ``sys.modules``, checked in a fresh
interpreter after importing ``edgeopt_runtime``, loading, running and profiling models and
using the CLI (the test process itself has TensorFlow loaded to build the models)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .test_profile import build_models

FORBIDDEN = ("tensorflow", "keras", "onnx", "tf_keras", "tflite_runtime")

SCRIPT = textwrap.dedent(
    """
    import json, sys

    def heavy(prefixes):
        return sorted(
            m for m in sys.modules
            if any(m == p or m.startswith(p + ".") for p in prefixes)
        )

    import edgeopt_runtime as rt
    after_import = heavy(["onnxruntime", "ai_edge_litert"])  # backends load lazily

    from edgeopt_runtime.cli import main
    import numpy as np

    paths = json.loads(sys.argv[1])
    out_dir = sys.argv[2]
    for p in paths:
        m = rt.load(p)
        x = {s.name: np.zeros([d or 1 for d in s.shape], s.dtype) for s in m.inputs}
        m.run(x)
        rt.profile(p, runs=2, warmup=1)  # includes the ONNX per-op profiling session
        np.savez(out_dir + "/in.npz", **x)
        assert main(["run", p, "--input", out_dir + "/in.npz", "--output", out_dir + "/o.npz"]) == 0
    print(json.dumps({
        "forbidden": heavy(json.loads(sys.argv[3])),
        "backends_after_import": after_import,
    }))
    """
)


def test_runtime_never_imports_tensorflow_keras_or_onnx(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    models = build_models(tmp_path_factory.getbasetemp())
    paths = [str(models[k]) for k in ("int8_tflite", "float_tflite", "int8_onnx", "float_onnx")]
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(paths), str(tmp_path), json.dumps(FORBIDDEN)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["forbidden"] == [], result["forbidden"]
    # `import edgeopt_runtime` alone loads neither engine: it stays instant on a device
    assert result["backends_after_import"] == [], result["backends_after_import"]
