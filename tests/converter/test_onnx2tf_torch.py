"""Real PyTorch exports to every TFLite target (slow: needs torch, ``pip install -e .[torch]``).

Small seeded models — conv/BN/ReLU/MaxPool/residual, depthwise + ReLU6, a Linear head, and a
MobileNetV3-style HardSwish block — trained-free but with BatchNorm statistics settled on data,
exported by ``torch.onnx.export`` (TorchScript exporter, ``dynamo=False``: the dynamo exporter
needs onnxscript) with a dynamic batch, then converted for arm-cpu, edgetpu and mobile-gpu.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import edgeopt_runtime as rt
import numpy as np
import pytest
from edgeopt_runtime.manifest import sha256_file

import edgeopt

pytestmark = pytest.mark.slow
torch = pytest.importorskip("torch")
nn = torch.nn

TARGETS = ["arm-cpu", "edgetpu", "mobile-gpu"]


class Net(nn.Module):
    def __init__(self, act: type[nn.Module] = nn.ReLU6) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU())
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False),
                                nn.BatchNorm2d(16), act())
        self.pw = nn.Sequential(nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.head = nn.Linear(16, 10)

    def forward(self, x: Any) -> Any:
        x = self.pool(self.stem(x))
        x = torch.relu(x + self.pw(self.dw(x)))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def settled(model: nn.Module, data: np.ndarray) -> nn.Module:
    """BatchNorm running statistics from the data (no training of the weights)."""
    model.train()
    with torch.no_grad():
        for _ in range(10):
            model(torch.from_numpy(data))
    return model.eval()


def export(model: nn.Module, path: Path, shape: tuple[int, ...]) -> Path:
    torch.onnx.export(model, torch.zeros(1, *shape), str(path), input_names=["input"],
                      output_names=["output"], opset_version=17, dynamo=False,
                      dynamic_axes={"input": {0: "batch_size"}, "output": {0: "batch_size"}})
    return path


@pytest.mark.parametrize("act", ["relu6", "hardswish"])
def test_torch_export_converts_for_every_target(tmp_path: Path, act: str) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    calib = rng.uniform(0, 1, (24, 3, 48, 48)).astype(np.float32)
    model = settled(Net(nn.ReLU6 if act == "relu6" else nn.Hardswish), calib)
    src = export(model, tmp_path / "net.onnx", (3, 48, 48))
    digest = sha256_file(src)
    np.savez(tmp_path / "calib.npz", input=calib)
    report = edgeopt.convert(str(src), TARGETS, str(tmp_path / "calib.npz"),
                             out=tmp_path / "out", latency_runs=3,
                             rewrite=["edgetpu"] if act == "hardswish" else [])
    assert sha256_file(src) == digest
    x = calib[:8]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    for art in report.artifacts:
        if art["format"] == "tflite":
            check = art["details"]["onnx2tf"]["float_check"]["outputs"][0]
            assert check["max_abs_error"] < 1e-4 and check["cosine"] > 0.99999, check
        got = rt.load(tmp_path / "out" / art["target"], format=art["format"],
                      precision=art["precision"]).run_batch(x)["output"]
        cos = float(np.dot(got.ravel(), want.ravel()) / np.linalg.norm(got)
                    / np.linalg.norm(want))
        assert cos > (0.9999 if art["precision"] == "float16" else 0.99), (art["path"], cos)
    (tpu,) = [a for a in report.artifacts if a["target"] == "edgetpu"]
    assert tpu["preflight"]["summary"]["fully_delegated"], tpu["preflight"]["summary"]
