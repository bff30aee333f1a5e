"""Starting recipes for a target: its ``[recipes]`` space, ordered by what the model looks like.

The order is a prior, not a verdict: the search measures every starting point it has room for
and reverts layers from there. What the priors rest on (measured here, 1 thread, issue 14):

* transformers on ONNX Runtime: static QDQ collapses (MiniLM-L6 cosine min 0.77 with the masks
  kept float, <= 0.81 with the Optimum exclusions); dynamic per-channel on the weight MatMuls
  holds 0.989 at 2.3x, and with smoothing + outlier split 0.998 at 2.5x (MPNet-base: 0.996 at
  3.1x, where plain dynamic per-channel gives 0.87);
* CNNs on ORT: static QDQ U8S8 per-channel is 2.0-2.2x (S8S8 1.3x);
* transformers on TFLite: dynamic-range 2.6x at cosine 0.9999, full int8 0.79x (LayerNorm's
  pieces stay float and split the XNNPACK graph);
* the Edge TPU runs full int8 only.
"""

from __future__ import annotations

from ..targets import (
    CalibrationMethod,
    ExclusionPreset,
    Format,
    OnnxScheme,
    QuantType,
    Scheme,
    TargetProfile,
    TransformName,
)
from .recipe import Recipe, TransformSpec


def starting_points(profile: TargetProfile, fmt: str, transformer: bool) -> list[Recipe]:
    """Candidate recipes for ``profile`` in format ``fmt``, most promising first.

    Args:
        profile: the target (its ``recipes`` section bounds what is proposed).
        fmt: ``"onnx"`` or ``"tflite"``.
        transformer: whether the model is transformer-shaped (``edgeopt.recipes.graph.detect``
            for ONNX; for TFLite sources the caller decides, e.g. from the Keras layers).

    Returns:
        Distinct recipes, each admitted by the target's recipe space.
    """
    space = profile.recipes
    out: list[Recipe] = []
    if Format(fmt) is Format.ONNX:
        out = _onnx(profile, transformer)
        out = [r for r in out if OnnxScheme(r.mode) in space.onnx
               and all(t.name in space.transforms for t in r.transforms)
               and all(e in space.exclusion_presets for e in r.exclude)
               and (r.mode != "static" or (r.activation_type in space.activation_types
                                           and r.calibration_method in space.calibration_methods))
               and (r.per_channel or space.per_tensor)]
    else:
        order = ([Scheme.DYNAMIC, Scheme.INT8, Scheme.FLOAT16, Scheme.INT16X8] if transformer
                 else [Scheme.INT8, Scheme.INT16X8, Scheme.DYNAMIC, Scheme.FLOAT16])
        per_channel = profile.quantization.per_channel
        out = [Recipe(Format.TFLITE, s.value, per_channel=per_channel).normalized()
               for s in order if s in space.tflite]
    return list(dict.fromkeys(out))


def _onnx(profile: TargetProfile, transformer: bool) -> list[Recipe]:
    spec = profile.onnx
    static = Recipe(Format.ONNX, "static", per_channel=True, activation_type=spec.activation_type,
                    weight_type=spec.weight_type, quant_format=spec.quant_format)
    methods = [CalibrationMethod.MINMAX, CalibrationMethod.PERCENTILE, CalibrationMethod.ENTROPY]
    if transformer:
        smooth = TransformSpec.make(TransformName.SMOOTH)
        split = TransformSpec.make(TransformName.OUTLIER_SPLIT)
        dyn = Recipe(Format.ONNX, "dynamic", per_channel=True, op_types=("MatMul",))
        return [
            Recipe(Format.ONNX, "dynamic", per_channel=True, op_types=("MatMul",),
                   transforms=(smooth, split)),
            Recipe(Format.ONNX, "dynamic", per_channel=True, op_types=("MatMul",),
                   transforms=(split,)),
            dyn,
            Recipe(Format.ONNX, "dynamic", per_channel=False, op_types=("MatMul",)),
            Recipe(Format.ONNX, "static", per_channel=True, activation_type=QuantType.UINT8,
                   exclude=(ExclusionPreset.TRANSFORMER,), transforms=(smooth, split)),
            Recipe(Format.ONNX, "weight-only", per_channel=True),
        ]
    out = [static]
    out += [Recipe(Format.ONNX, "static", per_channel=True, activation_type=spec.activation_type,
                   weight_type=spec.weight_type, calibration_method=m) for m in methods[1:]]
    out += [Recipe(Format.ONNX, "static", per_channel=True, activation_type=QuantType.INT8),
            Recipe(Format.ONNX, "static", per_channel=False,
                   activation_type=spec.activation_type),
            Recipe(Format.ONNX, "dynamic", per_channel=True),
            Recipe(Format.ONNX, "weight-only", per_channel=True)]
    return out
