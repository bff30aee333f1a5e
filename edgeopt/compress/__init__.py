"""``edgeopt compress``: pruning, weight clustering, distillation and quantization-aware
fine-tuning of a float model, with the gains measured through ``edgeopt convert``.

Data flow (one module per box)::

    options.CompressOptions ─┐
    data.load_dataset ───────┼─► keras_steps.run_steps ─► channels (structured pruning)
    sources.load_source ─────┘        │                    magnitude (+ train.MaskConstraint)
                                      │                    cluster   (+ train.ClusterConstraint)
                                      │                    qat       (fake quant, BN folding)
                                      │   train.fine_tune (distillation from the float original)
                                      ▼
                         OUT/model.<suffix> (float, same format as the source)
                                      │
              measure: edgeopt.convert(original) and edgeopt.convert(compressed), same targets
                       ─► size raw/gzip/zstd, interleaved int8 latency, accuracy / drift
              sparsity: XNNPACK sparse-path pre-flight
                                      ▼
                         report: OUT/report.{json,md,html}  (schema edgeopt.compress/1)

ONNX sources take post-training ``--prune`` / ``--cluster`` (``onnx_steps``). Binarisation is
refused with its measured reason (``binarize``). Heavy frameworks are imported inside the
functions that need them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CompressOptions", "CompressReport", "compress"]


def __getattr__(name: str) -> Any:
    if name == "CompressOptions":
        from .options import CompressOptions

        return CompressOptions
    if name in ("compress", "CompressReport"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'edgeopt.compress' has no attribute {name!r}")
