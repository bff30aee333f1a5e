"""Source models: read a float Keras / SavedModel / ONNX model into one ``ModelSource``.

Loaders register by name in a registry (a duplicate name is an error). Dispatch is on the path
(extension or folder content), and each loader imports its framework only inside itself, so
importing this module stays cheap.

Source files are untrusted: each loader checks its file before the framework reads it.
``.keras``: zip structure (CRC, member paths, symlinks, duplicates, bomb-sized members).
``.h5`` and the weights inside ``.keras``: read completely once by h5py in a child process with
a time and memory bound (a damaged HDF5 file was found to loop the HDF5 library forever), with
external links / external storage and NaN weights refused. Keras configs: Lambda layers and
modules outside Keras refused unless ``trust_model``. SavedModel: symlinks out of the folder,
FIFOs, and graph ops that touch files or call Python refused. ONNX: external-data references
must stay inside the model's folder and are checked before any byte is read; names must be
UTF-8; NaN weights refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt_runtime.errors import MissingDependencyError, ModelLoadError
from edgeopt_runtime.manifest import sha256_file
from edgeopt_runtime.spec import TensorSpec

SOURCE_FORMATS = ("keras", "h5", "savedmodel", "onnx")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# A .keras archive stores its members uncompressed; 20x leaves room for re-zipped (deflated)
# files, and anything beyond it (plus a fixed slack) is treated as a zip bomb.
ARCHIVE_MAX_RATIO = 20
ARCHIVE_SLACK_BYTES = 64 << 20
# The HDF5 probe (see _probe_hdf5): a time budget and an address-space cap for the child.
PROBE_BASE_SECONDS = 60.0
PROBE_SECONDS_PER_GIB = 60.0
PROBE_MEMORY_BYTES = 2 << 30


@dataclass(frozen=True)
class ModelSource:
    """A loaded float source model and its IO signature.

    ``inputs`` / ``outputs`` mark dynamic dimensions with ``None``. ``handle`` is the loaded
    framework object (``keras.Model``, the SavedModel's signature function, or the cleaned
    ``onnx.ModelProto``); backends use it instead of reading the file again.
    """

    format: str
    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    sha256: str
    handle: Any = field(default=None, repr=False, compare=False)
    signature_key: str | None = None  # SavedModel only
    notes: tuple[str, ...] = ()

    @property
    def is_tensorflow(self) -> bool:
        """True for Keras / SavedModel sources (they go through the TF converters)."""
        return self.format != "onnx"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (the ``source`` block of manifests and reports)."""
        return {
            "path": str(self.path),
            "format": self.format,
            "sha256": self.sha256,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "signature": self.signature_key,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Loader:
    """A registered source loader: a cheap path test and the (heavy) load function."""

    name: str
    accepts: Callable[[Path], bool]
    load: Callable[[Path, bool], ModelSource]


_LOADERS: dict[str, Loader] = {}


def register_loader(
    name: str, accepts: Callable[[Path], bool], load: Callable[[Path, bool], ModelSource]
) -> None:
    """Register a source loader under ``name``.

    Raises:
        ValueError: a loader of that name is already registered (a programming error).
    """
    if name in _LOADERS:
        raise ValueError(f"source loader {name!r} is already registered")
    _LOADERS[name] = Loader(name, accepts, load)


def loader_names() -> list[str]:
    return list(_LOADERS)


def load_source(path: str | os.PathLike[str], *, trust_model: bool = False) -> ModelSource:
    """Load a float model for conversion.

    Args:
        path: a ``.keras`` / ``.h5`` file, a SavedModel directory or an ``.onnx`` file.
        trust_model: allow Keras to deserialize Python code stored in the file (``Lambda``
            layers). Only for files you trust: it can run arbitrary code.

    Returns:
        The source with its format, IO signature and sha256.

    Raises:
        ModelLoadError: missing, unreadable, corrupt or unsupported model (one line).
    """
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"{p}: no such file or directory")
    for loader in _LOADERS.values():
        if loader.accepts(p):
            return loader.load(p, trust_model)
    raise ModelLoadError(_unsupported_message(p))


def _unsupported_message(p: Path) -> str:
    expected = "expected a .keras or .h5 file, a SavedModel directory or an .onnx file"
    if p.is_dir():
        return f"{p}: directory has no saved_model.pb; {expected}"
    hints = {
        ".tflite": "it is already a TFLite model; pass the float model it was made from",
        ".pt": "export PyTorch models with torch.onnx.export and pass the .onnx file",
        ".pth": "export PyTorch models with torch.onnx.export and pass the .onnx file",
        ".pb": "pass the SavedModel directory that contains saved_model.pb",
        **dict.fromkeys(
            (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z"),
            "archives are not read; unpack it and pass the model inside",
        ),
    }
    hint = hints.get(p.suffix.lower())
    return f"{p}: unsupported model format {p.suffix or '(no extension)'!r}; " + (
        f"{hint}" if hint else expected
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, (KeyError, IndexError)) or not text:  # str(KeyError('x')) is "'x'"
        text = f"{type(exc).__name__} {text}".strip()
    return text.splitlines()[0][:300]


def sha256_tree(directory: Path) -> str:
    """Hash of a directory: every file's relative path and content hash, in sorted order."""
    h = hashlib.sha256()
    for f in sorted(p for p in directory.rglob("*") if p.is_file()):
        h.update(f.relative_to(directory).as_posix().encode())
        h.update(b"\0" + sha256_file(f).encode() + b"\n")
    return h.hexdigest()


# ----------------------------------------------------------------------------------- Keras


def _keras_error(p: Path, exc: BaseException) -> ModelLoadError:
    """Translate Keras deserialization failures into one actionable line."""
    text = str(exc)
    if "Lambda" in text and "safe_mode" in text:
        return ModelLoadError(
            f"{p}: the model contains a Lambda layer with Python code, refused in safe mode; "
            "if you trust this file, pass --trust-model (trust_model=True)"
        )
    missing = re.search(r"Could not locate class '([^']+)'", text) or re.search(
        r"'registered_name': '([^']+)'", text
    )
    if missing or "could not be deserialized" in text:
        name = missing.group(1) if missing else "a custom object"
        return ModelLoadError(
            f"{p}: cannot deserialize custom layer/object {name!r}; re-save the model with only "
            "built-in layers, or export it as a SavedModel (model.export(dir)) and pass that"
        )
    return ModelLoadError(f"{p}: cannot load Keras model: {_first_line(exc)}")


def _keras_specs(p: Path, model: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    try:
        ins, outs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError):
        ins, outs = [], []
    if not ins or not outs:
        raise ModelLoadError(
            f"{p}: the Keras model has no defined inputs/outputs (a subclassed or unbuilt "
            "model); build it with keras.Input(...) or export a SavedModel instead"
        )
    out_names = _unique(list(getattr(model, "output_names", None) or []), len(outs), "output")
    inputs = tuple(
        TensorSpec(t.name, tuple(t.shape), _np_dtype_name(t.dtype)) for t in ins
    )
    outputs = tuple(
        TensorSpec(n, tuple(t.shape), _np_dtype_name(t.dtype))
        for n, t in zip(out_names, outs, strict=True)
    )
    return inputs, outputs


def _unique(names: list[str], count: int, prefix: str) -> list[str]:
    """``count`` distinct, non-empty names (Keras can repeat a layer name for multi outputs)."""
    if len(names) != count:
        names = [f"{prefix}_{i}" for i in range(count)]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        n = n or prefix
        if n in seen:
            seen[n] += 1
            n = f"{n}_{seen[n]}"
        seen.setdefault(n, 0)
        out.append(n)
    return out


def _np_dtype_name(dtype: Any) -> str:
    import numpy as np

    as_np = getattr(dtype, "as_numpy_dtype", None)
    return np.dtype(as_np if as_np is not None else dtype).name


def _load_keras(p: Path, trust_model: bool) -> ModelSource:
    fmt = "h5" if p.suffix.lower() in (".h5", ".hdf5") else "keras"
    if p.is_dir():
        raise ModelLoadError(f"{p}: is a directory, expected a {p.suffix} file")
    _check_regular_file(p)
    digest = sha256_file(p)
    # Checked before Keras sees the file: archive structure, HDF5 data read in a bounded child
    # process, and the layer config scanned for Python code.
    if fmt == "keras":
        config = _check_keras_archive(p)
        for member in _hdf5_members(p):
            _probe_hdf5(p, digest, member)
    else:
        with open(p, "rb") as f:
            if f.read(8) != _HDF5_MAGIC:
                raise ModelLoadError(f"{p}: not an HDF5 file (expected a Keras .h5 model)")
        config = _probe_hdf5(p, digest, None).get("model_config")
        if config is None:
            raise ModelLoadError(
                f"{p}: HDF5 file without a model_config attribute: it holds weights only, not "
                "a model saved with model.save(); pass the full model"
            )
    if not trust_model:
        scan_keras_config(p, config)
    from .backends._frameworks import import_keras, stdout_to_stderr

    keras = import_keras()
    try:
        with stdout_to_stderr():
            model = keras.models.load_model(p, safe_mode=not trust_model, compile=False)
    except Exception as exc:  # Keras raises ValueError/TypeError/OSError/KeyError alike
        raise _keras_error(p, exc) from None
    inputs, outputs = _keras_specs(p, model)
    return ModelSource(fmt, p, inputs, outputs, digest, handle=model)


def _check_regular_file(p: Path) -> None:
    """A FIFO or device would block (or never end) when read: refuse anything but a file."""
    if not stat.S_ISREG(p.stat().st_mode):
        raise ModelLoadError(f"{p}: not a regular file (a pipe, socket or device)")


def _check_keras_archive(p: Path) -> Any:
    """Check a ``.keras`` zip before Keras opens it; return its parsed ``config.json``.

    Refuses: a file that is not a zip, damaged members (CRC / truncation), member paths that
    could escape an extraction folder, symlink members, duplicate names, a total uncompressed
    size far beyond the archive's (zip bomb), and a missing or unparsable ``config.json``.
    """
    try:
        with zipfile.ZipFile(p) as zf:
            infos = zf.infolist()
            _check_zip_members(p, infos)
            bad = zf.testzip()  # reads every member: CRC and decompression errors
            if bad is not None:
                raise ModelLoadError(
                    f"{p}: archive member {bad!r} is damaged (CRC mismatch); the file is corrupt "
                    "or incomplete"
                )
            text = zf.read("config.json")
    except ModelLoadError:
        raise
    except Exception as exc:  # BadZipFile, zlib.error, EOFError, OSError, NotImplementedError
        raise ModelLoadError(
            f"{p}: not a .keras archive (expected a zip file saved by model.save): "
            f"{_first_line(exc)}"
        ) from None
    try:
        return json.loads(text)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ModelLoadError(
            f"{p}: config.json in the archive is not valid JSON ({_first_line(exc)}); the file "
            "is corrupt"
        ) from None


def _check_zip_members(p: Path, infos: list[zipfile.ZipInfo]) -> None:
    names = [i.filename for i in infos]
    for info in infos:
        parts = info.filename.replace("\\", "/").split("/")
        if info.filename.startswith("/") or ".." in parts or ":" in parts[0]:
            raise ModelLoadError(f"{p}: archive member {info.filename!r} has an unsafe path")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ModelLoadError(f"{p}: archive member {info.filename!r} is a symbolic link")
    dup = next((n for n, k in Counter(names).items() if k > 1), None)
    if dup is not None:
        raise ModelLoadError(f"{p}: archive member {dup!r} appears twice")
    unpacked = sum(i.file_size for i in infos)
    limit = ARCHIVE_MAX_RATIO * p.stat().st_size + ARCHIVE_SLACK_BYTES
    if unpacked > limit:
        raise ModelLoadError(
            f"{p}: archive members unpack to {unpacked} bytes from {p.stat().st_size}; refusing "
            "a possible zip bomb"
        )
    if "config.json" not in names:
        raise ModelLoadError(
            f"{p}: cannot load Keras model: the archive has no config.json (expected a file "
            "saved by model.save)"
        )


def _hdf5_members(p: Path) -> list[str]:
    with zipfile.ZipFile(p) as zf:
        return [n for n in zf.namelist() if n.endswith(".h5")]


def scan_keras_config(p: Path, config: Any) -> None:
    """Refuse a Keras model config that would make Keras run or import Python code.

    Independent of Keras' own ``safe_mode`` (which older Keras 3 releases could be talked out
    of): any ``Lambda`` layer or serialized lambda, and any class or function from a module
    outside ``keras``, is refused. ``compile_config`` is skipped: it is not deserialized with
    ``compile=False``.

    Args:
        p: the model path (for the message).
        config: the parsed model config (``config.json``, or the ``model_config`` attribute of
            an ``.h5`` file, as JSON text or already parsed).

    Raises:
        ModelLoadError: the config holds code, naming ``--trust-model``.
    """
    if isinstance(config, (bytes, str)):
        try:
            config = json.loads(config)
        except ValueError as exc:
            raise ModelLoadError(
                f"{p}: the model config is not valid JSON ({_first_line(exc)}); the file is "
                "corrupt"
            ) from None
    stack = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        problem = _code_in(item)
        if problem:
            raise ModelLoadError(f"{p}: {problem}")
        stack.extend(v for k, v in item.items() if k != "compile_config")


def _code_in(item: dict[str, Any]) -> str | None:
    """Why one config dict would make Keras run or import code, or None."""
    cls = item.get("class_name")
    conf = item.get("config")
    name = conf.get("name") if isinstance(conf, dict) else None
    trust = "if you trust this file, pass --trust-model (trust_model=True)"
    if cls in ("Lambda", "__lambda__") or item.get("function_type") == "lambda":
        what = f"a Lambda layer {name!r}" if cls == "Lambda" and name else "a Python lambda"
        return f"the model contains {what} with Python code, refused in safe mode; {trust}"
    module = item.get("module")
    if isinstance(module, str) and module != "keras" and not module.startswith("keras."):
        return (
            f"cannot deserialize custom layer/object {cls!r} from Python module {module!r} "
            "(outside Keras; importing it would run its code): re-save the model with built-in "
            "layers, export a SavedModel (model.export(dir)), or, if you trust this file and the "
            "module is importable, pass --trust-model"
        )
    return None


def _probe_hdf5(p: Path, digest: str, member: str | None) -> dict[str, Any]:
    """Read an HDF5 file (or a ``.keras`` member) completely in a child process, bounded.

    A damaged HDF5 file can send the HDF5 C library into an endless loop (measured: a swapped
    byte range made reading an attribute spin forever, with Ctrl-C ignored) or crash it. The
    child reads every link, attribute and dataset, with a time limit and an address-space cap,
    so Keras reads only data that has been read once safely. It also refuses external links,
    external or virtual dataset storage (they read other files) and NaN weights.

    Returns:
        ``{"model_config": str | None}`` (cached per content hash and member).

    Raises:
        ModelLoadError: the probe found a problem, timed out, or crashed.
        MissingDependencyError: h5py is not installed.
    """
    key = (digest, member)
    if key in _PROBED:
        return _PROBED[key]
    where = f"{p} (member {member})" if member else str(p)
    size = p.stat().st_size
    timeout = float(os.environ.get("EDGEOPT_PROBE_TIMEOUT_S", 0)) or (
        PROBE_BASE_SECONDS + PROBE_SECONDS_PER_GIB * size / (1 << 30)
    )
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from edgeopt.sources import hdf5_probe_main; sys.exit(hdf5_probe_main(sys.argv[2:]))"
    )
    root = str(Path(__file__).resolve().parent.parent)
    limit = PROBE_MEMORY_BYTES + 4 * size
    cmd = [sys.executable, "-c", code, root, str(p), member or "", str(limit)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ModelLoadError(
            f"{where}: reading the HDF5 data did not finish within {timeout:.0f} s; the file is "
            "corrupt (a damaged HDF5 file can loop the HDF5 library forever)"
        ) from None
    if proc.returncode < 0:
        raise ModelLoadError(
            f"{where}: the HDF5 library crashed reading this file "
            f"({_signal_name(-proc.returncode)}); the file is corrupt"
        )
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise ModelLoadError(f"{where}: cannot read the HDF5 data: {tail}") from None
    if "missing" in result:
        raise MissingDependencyError(result["missing"], result["missing"], "to read Keras models")
    if "error" in result:
        raise ModelLoadError(f"{where}: {result['error']}")
    _PROBED[key] = result
    return result


_PROBED: dict[tuple[str, str | None], dict[str, Any]] = {}


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def hdf5_probe_main(argv: list[str]) -> int:
    """Child side of ``_probe_hdf5``: ``PATH MEMBER MEMORY_LIMIT``; prints one JSON line.

    Returns:
        The exit code (0 also when the file was refused: the JSON says why).
    """
    import resource

    path, member, limit = argv[0], argv[1], int(argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        result = _read_hdf5(path, member)
    except ImportError:
        result = {"missing": "h5py"}
    except MemoryError:
        result = {"error": "HDF5 data needs more memory than the file could hold; it is corrupt"}
    except _Hdf5Refusal as exc:
        result = {"error": str(exc)}
    except Exception as exc:  # h5py raises OSError / KeyError / ValueError / RuntimeError
        result = {"error": f"cannot read the HDF5 data (corrupt file?): {_first_line(exc)}"}
    print(json.dumps(result))
    return 0


class _Hdf5Refusal(Exception):
    """The HDF5 data is readable but must not be used (links or storage outside the file)."""


def _read_hdf5(path: str, member: str) -> dict[str, Any]:
    import io

    import h5py
    import numpy as np

    if member:
        with zipfile.ZipFile(path) as zf:
            source: Any = io.BytesIO(zf.read(member))
    else:
        source = path
    with h5py.File(source, "r") as f:
        for name, link in _hdf5_links(f):
            if isinstance(link, h5py.ExternalLink):
                raise _Hdf5Refusal(f"HDF5 entry {name!r} is a link to another file")
        nan: list[str] = []

        def visit(name: str, obj: Any) -> None:
            _read_attrs(obj)
            if not isinstance(obj, h5py.Dataset):
                return
            if obj.external or obj.is_virtual:
                raise _Hdf5Refusal(f"HDF5 dataset {name!r} stores its data in other files")
            data = obj[()]
            if isinstance(data, np.ndarray) and data.dtype.kind == "f" and np.isnan(data).any():
                nan.append(name)

        config = _read_attrs(f).get("model_config")
        f.visititems(visit)  # hard links only, each object once (no cycles)
    if nan:
        raise _Hdf5Refusal(
            f"weights {', '.join(map(repr, nan[:3]))} hold NaN values; the file is corrupt"
        )
    if isinstance(config, bytes):
        config = config.decode("utf-8", errors="replace")
    return {"model_config": config if isinstance(config, str) else None}


def _hdf5_links(f: Any) -> list[tuple[str, Any]]:
    links: list[tuple[str, Any]] = []
    f.visititems_links(lambda name, link: links.append((name, link)))
    return links


def _read_attrs(obj: Any) -> dict[str, Any]:
    return {k: obj.attrs[k] for k in obj.attrs}


register_loader(
    "keras",
    lambda p: p.suffix.lower() in (".keras", ".h5", ".hdf5") and not p.is_dir(),
    _load_keras,
)


# ------------------------------------------------------------------------------- SavedModel

SERVING_KEY = "serving_default"


def _load_savedmodel(p: Path, trust_model: bool) -> ModelSource:
    check_tree(p)
    from .backends._frameworks import import_tf, stdout_to_stderr

    tf = import_tf()
    if not trust_model:
        check_savedmodel_ops(p)
    try:
        with stdout_to_stderr():
            loaded = tf.saved_model.load(str(p))
    except Exception as exc:  # tf raises OSError / ValueError / various tf.errors
        raise ModelLoadError(f"{p}: cannot load SavedModel: {_first_line(exc)}") from None
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


def check_tree(directory: Path) -> None:
    """Refuse a model folder holding links or special files the loader must not follow.

    A symbolic link resolving outside the folder would let the model read any file on the
    machine; a linked directory can form a loop (endless hashing); a FIFO or device blocks the
    reader forever.

    Raises:
        ModelLoadError: naming the offending entry.
    """
    root = directory.resolve()
    for here, dirs, files in os.walk(directory, followlinks=False):
        for name in dirs + files:
            entry = Path(here, name)
            if entry.is_symlink():
                try:
                    target = entry.resolve(strict=True)
                except (OSError, RuntimeError):  # dangling link or a link loop
                    raise ModelLoadError(f"{entry}: broken or looping symbolic link") from None
                if not target.is_relative_to(root):
                    raise ModelLoadError(
                        f"{entry}: symbolic link to {target}, outside the model folder "
                        f"{directory}; refused (copy the file into the folder)"
                    )
                if target.is_dir():
                    raise ModelLoadError(f"{entry}: symbolic link to a directory; refused")
            mode = entry.stat().st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise ModelLoadError(f"{entry}: not a regular file (a pipe, socket or device)")


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
            f"{p}: cannot load SavedModel: saved_model.pb does not parse ({_first_line(exc)}); "
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
    return TensorSpec(name, shape, _np_dtype_name(spec.dtype))


register_loader("savedmodel", lambda p: (p / "saved_model.pb").is_file(), _load_savedmodel)


# ------------------------------------------------------------------------------------ ONNX


def _onnx_specs(values: Any) -> tuple[TensorSpec, ...]:
    import onnx

    specs = []
    for v in values:
        tt = v.type.tensor_type
        dims = tuple(
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in tt.shape.dim
        )
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name if tt.elem_type else "?"
        specs.append(TensorSpec(v.name, dims, dtype))
    return tuple(specs)


def clean_onnx(model: Any) -> tuple[Any, list[str]]:
    """Drop initializers that old exporters (opset <= 9) also list as graph inputs.

    ONNX Runtime treats those as overridable inputs, which both confuses the IO signature and
    stops the quantizer from seeing the weights as constants.

    Returns:
        The cleaned model (the same object, modified) and a list of notes.
    """
    inits = {i.name for i in model.graph.initializer}
    fake = [i for i in model.graph.input if i.name in inits]
    if not fake:
        return model, []
    keep = [i for i in model.graph.input if i.name not in inits]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    # IR < 4 requires every initializer to be a graph input; IR 4 lifted that rule.
    model.ir_version = max(model.ir_version, 4)
    return model, [f"removed {len(fake)} initializer(s) also listed as graph inputs (old opset)"]


def _load_onnx(p: Path, trust_model: bool) -> ModelSource:
    if p.is_dir():
        raise ModelLoadError(f"{p}: is a directory, expected an .onnx file")
    _check_regular_file(p)
    from .backends._frameworks import import_onnx

    onnx = import_onnx()
    try:
        # External data is read only after every reference has been checked (below).
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # DecodeError, OSError, ValueError
        raise ModelLoadError(f"{p}: not a readable ONNX model: {_first_line(exc)}") from None
    check_onnx_strings(p, model)
    load_onnx_external_data(p, model)
    if not model.graph.node or not model.graph.output:
        raise ModelLoadError(f"{p}: not an ONNX model (no graph nodes or outputs)")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx.checker.ValidationError and friends
        raise ModelLoadError(f"{p}: invalid ONNX model: {_first_line(exc)}") from None
    _check_onnx_finite(p, model)
    model, notes = clean_onnx(model)
    inputs = _onnx_specs(model.graph.input)
    if not inputs:
        raise ModelLoadError(f"{p}: ONNX graph has no inputs (every input is an initializer)")
    outputs = _onnx_specs(model.graph.output)
    return ModelSource("onnx", p, inputs, outputs, sha256_file(p), handle=model, notes=tuple(notes))


def onnx_tensors(model: Any) -> Iterator[Any]:
    """Every ``TensorProto`` of an ONNX model: initializers (dense and sparse), tensor
    attributes, in the main graph, every subgraph (If / Loop / Scan bodies), the model's
    functions and its training graphs."""
    graphs = [model.graph, *model.functions]
    for info in model.training_info:
        graphs += [info.initialization, info.algorithm]
    while graphs:
        g = graphs.pop()
        for sparse in getattr(g, "sparse_initializer", ()):
            yield from (sparse.values, sparse.indices)
        yield from getattr(g, "initializer", ())  # FunctionProto has no initializers
        for node in g.node:
            for a in node.attribute:
                if a.HasField("t"):
                    yield a.t
                yield from a.tensors
                for sparse in [a.sparse_tensor, *a.sparse_tensors]:
                    yield from (sparse.values, sparse.indices)
                if a.HasField("g"):
                    graphs.append(a.g)
                graphs.extend(a.graphs)


def load_onnx_external_data(p: Path, model: Any) -> None:
    """Check every external-data reference of ``model``, then read the data into it.

    A reference must name a regular file inside the model's folder: absolute paths, ``..``
    and symbolic links resolving outside are refused before a byte is read (they would copy
    any file on the machine into the converted model), as are offsets / lengths beyond the
    file's end.

    Raises:
        ModelLoadError: naming the tensor and the reference.
    """
    from onnx import TensorProto

    base = p.parent.resolve()
    for t in onnx_tensors(model):
        if t.data_location != TensorProto.EXTERNAL and not len(t.external_data):
            continue
        path, offset, length = _external_ref(p, base, t)
        with open(path, "rb") as f:
            f.seek(offset)
            t.raw_data = f.read(-1 if length is None else length)
        del t.external_data[:]
        t.data_location = TensorProto.DEFAULT


def _external_ref(p: Path, base: Path, t: Any) -> tuple[Path, int, int | None]:
    """(file, offset, length) of one tensor's external data, checked."""
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location", "")
    what = f"{p}: tensor {t.name!r} keeps its data in {loc!r}"
    parts = re.split(r"[\\/]", loc)
    if not loc or os.path.isabs(loc) or loc[0] in "/\\" or ":" in parts[0] or ".." in parts:
        raise ModelLoadError(f"{what}: external data must be a relative path inside the model's "
                             "folder; refused")
    try:
        path = (base / loc).resolve(strict=True)
    except (OSError, RuntimeError):
        raise ModelLoadError(f"{what}: no such file next to the model") from None
    if not path.is_relative_to(base):
        raise ModelLoadError(f"{what}, a symbolic link to {path} outside the model's folder; "
                             "refused")
    if not stat.S_ISREG(path.stat().st_mode):
        raise ModelLoadError(f"{what}: not a regular file")
    size = path.stat().st_size
    try:
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise ModelLoadError(f"{what}: offset / length are not integers") from None
    if offset < 0 or offset > size or (length is not None and not 0 <= length <= size - offset):
        raise ModelLoadError(f"{what}: offset {offset} / length {length} lie outside the "
                             f"{size}-byte file (truncated download?)")
    return path, offset, length


def check_onnx_strings(p: Path, model: Any) -> None:
    """Refuse names and strings that are not valid UTF-8 (protobuf hands them over as bytes,
    which then break every consumer down to the JSON report)."""
    stack: list[tuple[Any, str]] = [(model, "model")]
    while stack:
        msg, where = stack.pop()
        if msg.DESCRIPTOR.full_name == "onnx.TensorProto":  # skip the (large) data fields
            fields = [("name", msg.name), ("doc_string", msg.doc_string)]
            fields += [("external_data", e.key + e.value) for e in msg.external_data]
            bad = next((n for n, v in fields if isinstance(v, bytes)), None)
            if bad is not None:
                raise ModelLoadError(f"{p}: {where}.{bad} is not valid UTF-8; the file is corrupt")
            continue
        for fd, value in msg.ListFields():
            values = value if _repeated(fd) else [value]
            if fd.type == fd.TYPE_STRING and any(isinstance(v, bytes) for v in values):
                raise ModelLoadError(
                    f"{p}: {where}.{fd.name} is not valid UTF-8; the file is corrupt"
                )
            if fd.type == fd.TYPE_MESSAGE:
                stack.extend((v, f"{where}.{fd.name}") for v in values)


def _repeated(fd: Any) -> bool:
    flag = getattr(fd, "is_repeated", None)
    return bool(flag) if flag is not None else fd.label == fd.LABEL_REPEATED


def _check_onnx_finite(p: Path, model: Any) -> None:
    """Refuse NaN weights (a bit flip in a float can make one; quantization then fails with an
    obscure scale error)."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    floats = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16)
    for t in onnx_tensors(model):
        if t.data_type in floats:
            try:
                values = numpy_helper.to_array(t)
            except Exception as exc:  # noqa: BLE001 - size / type mismatch: a corrupt tensor
                raise ModelLoadError(
                    f"{p}: tensor {t.name!r} cannot be read: {_first_line(exc)}"
                ) from None
            if np.isnan(values).any():
                raise ModelLoadError(
                    f"{p}: tensor {t.name!r} holds NaN values; the model file is corrupt"
                )


register_loader("onnx", lambda p: p.suffix.lower() == ".onnx", _load_onnx)
