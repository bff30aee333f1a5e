"""Target profiles: TOML data loaded into validated frozen dataclasses.

Built-in profiles live in the repository's ``targets/`` folder and ship inside the wheel as
``edgeopt/targets_data/``. Users pass their own TOML file path instead of a built-in name.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import asdict, dataclass, fields
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

from edgeopt_runtime.errors import TargetError


class Scheme(StrEnum):
    """Quantization scheme of the primary TFLite artifact."""

    INT8 = "int8"  # full-integer int8 with a representative dataset
    FLOAT16 = "float16"  # float16 weights, float compute
    DYNAMIC = "dynamic"  # int8 weights, float activations (dynamic range)
    INT16X8 = "int16x8"  # int16 activations, int8 weights
    FLOAT32 = "float32"  # no quantization


class IODtype(StrEnum):
    FLOAT32 = "float32"
    INT8 = "int8"
    UINT8 = "uint8"


class CalibrationMethod(StrEnum):
    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


class OnnxScheme(StrEnum):
    STATIC = "static"  # QDQ / QOperator with calibrated activation ranges
    DYNAMIC = "dynamic"  # int8 weights, activations quantized per call (MatMulInteger)
    WEIGHT_ONLY = "weight-only"  # int8 weights dequantized to float: smaller file, float compute


class QuantType(StrEnum):
    INT8 = "int8"
    UINT8 = "uint8"


class QuantFormat(StrEnum):
    QDQ = "qdq"
    QOPERATOR = "qoperator"


class Delegate(StrEnum):
    XNNPACK = "xnnpack"
    EDGETPU = "edgetpu"
    GPU = "gpu"
    NONE = "none"


class Format(StrEnum):
    TFLITE = "tflite"
    ONNX = "onnx"


class ExclusionPreset(StrEnum):
    """Named sets of op types kept float by a recipe (``edgeopt.recipes.presets``)."""

    # Optimum's fix for static transformer collapse: LayerNorm, GELU, Softmax, residual and
    # embedding Adds and the attention-mask path feeding Softmax stay float.
    TRANSFORMER = "transformer"
    # MatMuls of two activations (Q.K^T, attention.V): no weight to quantize, both ranges live.
    ACTIVATION_MATMULS = "activation-matmuls"


class TransformName(StrEnum):
    """Float-equivalent graph rewrites a recipe may apply before quantizing (ONNX)."""

    SMOOTH = "smooth"  # SmoothQuant-style scaling of LayerNorm-fed weight MatMuls
    OUTLIER_SPLIT = "outlier-split"  # outlier input channels through a small float MatMul


class KeepFloatPolicy(StrEnum):
    """What keeping a layer float costs on a target (``[recipes] keep_float``)."""

    ALLOWED = "allowed"  # a float op runs on the same engine (CPU): only its own time
    PARTITION_SPLIT = "partition-split"  # a float op leaves the accelerator: the graph splits
    NEVER = "never"  # the target cannot run float ops at all


@dataclass(frozen=True)
class QuantizationSpec:
    scheme: Scheme = Scheme.INT8
    per_channel: bool = True
    calibration_method: CalibrationMethod = CalibrationMethod.MINMAX
    float_fallback: bool = True


@dataclass(frozen=True)
class TFLiteSpec:
    io_dtype: IODtype = IODtype.FLOAT32
    extra_variants: tuple[Scheme, ...] = ()


@dataclass(frozen=True)
class OnnxSpec:
    scheme: OnnxScheme = OnnxScheme.STATIC
    quant_format: QuantFormat = QuantFormat.QDQ
    activation_type: QuantType = QuantType.UINT8
    weight_type: QuantType = QuantType.INT8
    reduce_range: bool = False


@dataclass(frozen=True)
class ShapeRules:
    static: bool = False
    batch_one: bool = False
    max_rank: int = 6
    max_non_unit_dims: int = 0  # 0 = no limit


@dataclass(frozen=True)
class OpRules:
    supported: tuple[str, ...] = ()  # empty = every builtin op


@dataclass(frozen=True)
class RuntimeSpec:
    tflite_delegate: Delegate = Delegate.XNNPACK
    delegate_library: str | None = None
    onnx_providers: tuple[str, ...] = ("CPUExecutionProvider",)
    threads: int | None = None


@dataclass(frozen=True)
class RecipeSpace:
    """Which recipes ``tune`` may try on this target (``[recipes]``; every key optional).

    The default admits everything the backends can build; a target narrows it (the Edge TPU
    takes full int8 only). Presets and transforms are hypotheses the search measures.
    """

    tflite: tuple[Scheme, ...] = (Scheme.INT8, Scheme.DYNAMIC, Scheme.INT16X8, Scheme.FLOAT16)
    onnx: tuple[OnnxScheme, ...] = (OnnxScheme.STATIC, OnnxScheme.DYNAMIC, OnnxScheme.WEIGHT_ONLY)
    activation_types: tuple[QuantType, ...] = (QuantType.UINT8, QuantType.INT8)
    calibration_methods: tuple[CalibrationMethod, ...] = (
        CalibrationMethod.MINMAX, CalibrationMethod.ENTROPY, CalibrationMethod.PERCENTILE)
    per_tensor: bool = True  # per-tensor weights may be tried besides per-channel
    exclusion_presets: tuple[ExclusionPreset, ...] = (
        ExclusionPreset.TRANSFORMER, ExclusionPreset.ACTIVATION_MATMULS)
    transforms: tuple[TransformName, ...] = (TransformName.SMOOTH, TransformName.OUTLIER_SPLIT)
    keep_float: KeepFloatPolicy = KeepFloatPolicy.ALLOWED


@dataclass(frozen=True)
class TargetProfile:
    """A deployment target: what to produce and what the device can run."""

    name: str
    description: str
    formats: tuple[Format, ...]
    quantization: QuantizationSpec
    tflite: TFLiteSpec
    onnx: OnnxSpec
    shapes: ShapeRules
    ops: OpRules
    runtime: RuntimeSpec
    path: str | None = None
    recipes: RecipeSpace = RecipeSpace()
    # peak working set an artifact may need on the device, in MiB (2^20 bytes); None: no budget
    memory_budget_mb: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict whose values are the TOML strings (enums become their values)."""
        return _plain(asdict(self))

    def allows(self, fmt: str) -> bool:
        return any(f.value == fmt for f in self.formats)

    def runtime_manifest(self) -> dict[str, Any]:
        """The ``runtime`` block written into every artifact manifest for this target."""
        return {
            "threads": self.runtime.threads,
            "tflite_delegate": self.runtime.tflite_delegate.value,
            "delegate_library": self.runtime.delegate_library,
            "onnx_providers": list(self.runtime.onnx_providers),
        }


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


_SECTIONS: dict[str, type] = {
    "quantization": QuantizationSpec,
    "tflite": TFLiteSpec,
    "onnx": OnnxSpec,
    "shapes": ShapeRules,
    "ops": OpRules,
    "runtime": RuntimeSpec,
    "recipes": RecipeSpace,
}
_TOP_KEYS = {"name", "description", "formats", "memory_budget_mb", *_SECTIONS}
# A target's name is the folder its artifacts go to (OUT/<name>/): a plain identifier, so no
# separator, no "..", no hidden or reserved name can put files anywhere but a fresh sub-folder.
NAME_PATTERN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,62}[A-Za-z0-9])?")
_RESERVED = {"report.json", "report.md", "report.html"}  # the files next to the target folders
MAX_THREADS = 256  # what a device runtime may be asked for (the manifest schema's bound too)


def check_name(name: str, src: str = "<dict>") -> None:
    """Refuse a target name that is not a plain folder name.

    Raises:
        TargetError: separators, ``..``, a leading / trailing dot or dash, characters other
            than letters, digits, ``_ . -``, more than 64 characters, or a reserved name.
    """
    if not NAME_PATTERN.fullmatch(name) or ".." in name or name.lower() in _RESERVED:
        raise TargetError(
            f"{src}: name = {name!r} is not a valid target name: use 1-64 letters, digits, "
            "'_', '.' or '-', starting and ending with a letter or digit, without '..' (it "
            "names the folder OUT/<name>/)"
        )


def builtin_dir() -> Path:
    """Folder of the built-in profiles: inside the wheel, else the source tree's ``targets/``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "targets_data", here.parent / "targets"):
        if candidate.is_dir() and any(candidate.glob("*.toml")):
            return candidate
    raise TargetError(f"built-in target profiles not found next to {here}: broken installation")


def builtin_names() -> list[str]:
    return sorted(p.stem for p in builtin_dir().glob("*.toml"))


def _coerce(section: str, cls: type, key: str, value: Any, src: str) -> Any:
    """Convert a TOML value to the dataclass field's type, with a fix-it message on mismatch."""
    ftype = {f.name: f.type for f in fields(cls)}[key]
    where = f"{src}: [{section}] {key}"

    def enum_of(type_str: str) -> type[Enum] | None:
        obj = globals().get(type_str.split("[")[-1].rstrip("]. ").split(",")[0].strip())
        return obj if isinstance(obj, type) and issubclass(obj, Enum) else None

    def one(enum_cls: type[Enum] | None, v: Any) -> Any:
        if enum_cls is None:
            return v
        try:
            return enum_cls(v)
        except ValueError:
            allowed = ", ".join(repr(e.value) for e in enum_cls)
            raise TargetError(f"{where} = {v!r} is not valid; use one of {allowed}") from None

    tstr = str(ftype)
    if tstr.startswith("tuple"):
        if not isinstance(value, list):
            raise TargetError(f"{where} must be a list, got {type(value).__name__}")
        inner = enum_of(tstr)
        if inner is None and not all(isinstance(v, str) for v in value):
            raise TargetError(f"{where} must be a list of strings")
        return tuple(one(inner, v) for v in value)
    if tstr == "bool":
        if not isinstance(value, bool):
            raise TargetError(f"{where} must be true or false, got {value!r}")
        return value
    if tstr.startswith("int"):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise TargetError(f"{where} must be an integer, got {value!r}")
        if isinstance(value, int) and value < 0:
            raise TargetError(f"{where} must be >= 0, got {value}")
        return value
    if tstr.startswith("str"):
        if not isinstance(value, str):
            raise TargetError(f"{where} must be a string, got {value!r}")
        return value
    enum_cls = enum_of(tstr)
    if enum_cls is not None and not isinstance(value, str):
        raise TargetError(f"{where} must be a string, got {value!r}")
    return one(enum_cls, value)


def profile_from_dict(data: dict[str, Any], src: str = "<dict>") -> TargetProfile:
    """Validate a parsed TOML document and build a ``TargetProfile``.

    Raises:
        TargetError: unknown key, missing key, or a value of the wrong type (the message names
            the key and the allowed values).
    """
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise TargetError(
            f"{src}: unknown key(s) {', '.join(sorted(unknown))}; allowed top-level keys: "
            f"{', '.join(sorted(_TOP_KEYS))}"
        )
    for key in ("name", "formats"):
        if key not in data:
            raise TargetError(f"{src}: missing required key {key!r}")
    if not isinstance(data["name"], str) or not data["name"]:
        raise TargetError(f"{src}: 'name' must be a non-empty string")
    check_name(data["name"], src)
    formats_raw = data["formats"]
    if not isinstance(formats_raw, list) or not formats_raw:
        raise TargetError(f'{src}: \'formats\' must be a non-empty list like ["tflite", "onnx"]')
    try:
        formats = tuple(Format(f) for f in formats_raw)
    except ValueError:
        raise TargetError(
            f"{src}: 'formats' = {formats_raw!r}; allowed: 'tflite', 'onnx'"
        ) from None
    parts: dict[str, Any] = {}
    for section, cls in _SECTIONS.items():
        raw = data.get(section, {})
        if not isinstance(raw, dict):
            raise TargetError(f"{src}: [{section}] must be a table")
        allowed = {f.name for f in fields(cls)}
        bad = set(raw) - allowed
        if bad:
            raise TargetError(
                f"{src}: unknown key(s) in [{section}]: {', '.join(sorted(bad))}; "
                f"allowed: {', '.join(sorted(allowed))}"
            )
        parts[section] = cls(**{k: _coerce(section, cls, k, v, src) for k, v in raw.items()})
    threads = parts["runtime"].threads
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise TargetError(
            f"{src}: [runtime] threads = {threads} is out of range: use 1 to {MAX_THREADS}, or "
            "leave it out for the runtime's default"
        )
    check_op_names(parts["ops"].supported, src)
    return TargetProfile(
        name=data["name"],
        description=str(data.get("description", "")),
        formats=formats,
        path=src,
        memory_budget_mb=_memory_budget(data.get("memory_budget_mb"), src),
        **parts,
    )


def _memory_budget(value: Any, src: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 2**40:
        raise TargetError(
            f"{src}: memory_budget_mb = {value!r} must be a number of MiB > 0 (the peak working "
            "set an artifact may need on the device, e.g. memory_budget_mb = 64)"
        )
    return float(value)


def known_op_names() -> frozenset[str]:
    """Every TFLite builtin operator name (the schema's ``BuiltinOperator`` enum)."""
    from edgeopt_runtime.verify.schema_tables import BUILTIN_OPS

    return frozenset(BUILTIN_OPS.values())


def check_op_names(names: tuple[str, ...], src: str) -> None:
    """Refuse ``[ops] supported`` names that are no TFLite builtin op (a typo would otherwise
    mark every op of that kind unsupported), naming the closest real one.

    Raises:
        TargetError: the first unknown name, with a suggestion.
    """
    import difflib

    known = known_op_names()
    for name in names:
        if name in known:
            continue
        close = difflib.get_close_matches(name.upper().replace(" ", "_"), sorted(known), n=1,
                                          cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise TargetError(
            f"{src}: [ops] supported: {name!r} is not a TFLite builtin op name; {hint}use the "
            "names of the TFLite schema (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ...; "
            "`edgeopt inspect MODEL --target T` lists a model's ops by these names)"
        )


def load_target(name_or_path: str) -> TargetProfile:
    """Load a built-in profile by name (``arm-cpu``) or a user profile by TOML path.

    Raises:
        TargetError: unknown name, unreadable file, invalid TOML or invalid content.
    """
    path = Path(name_or_path)
    if name_or_path.endswith(".toml") or path.is_file():
        if not path.is_file():
            raise TargetError(f"{name_or_path}: target profile file not found")
    else:
        path = builtin_dir() / f"{name_or_path}.toml"
        if not path.is_file():
            raise TargetError(
                f"unknown target {name_or_path!r}; built-in targets: "
                f"{', '.join(builtin_names())} (or pass a path to your own .toml)"
            )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise TargetError(f"{path}: invalid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TargetError(f"{path}: cannot read target profile: {exc}") from None
    return profile_from_dict(data, str(path))
