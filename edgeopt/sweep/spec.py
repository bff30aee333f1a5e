"""The sweep file (``SWEEP.toml``) as values: models x targets x recipes, plus settings.

Shape (paths are relative to the sweep file)::

    targets = ["arm-cpu", "edgetpu", "my-board.toml"]   # built-in names or profile paths

    [[model]]
    path = "model.keras"          # .keras / .h5 / SavedModel dir / .onnx
    name = "digits"               # optional (default: the file stem)
    calib = "calib.npz"           # calibration data (as `edgeopt convert --calib`)
    val = "val.npz"               # optional validation data (drift, accuracy with labels)
    num_calib = 200               # optional, also: preprocess = {scale = "1/255"}, trust_model

    [[recipe]]
    name = "default"              # the target profile as it is

    [[recipe]]
    name = "entropy"              # plain overrides, run through edgeopt.convert now
    calib_method = "entropy"      # also: formats = ["onnx"], keep_float = ["regex", ...]
    profile = { onnx = { scheme = "dynamic" } }   # target-profile keys, section by section

    [[recipe]]
    name = "tuned"
    tune = { max_drop = 0.5 }     # a tune budget, as `edgeopt tune` takes it

    [settings]                    # optional: latency_runs (default 20), seed (0)
    [validation]                  # optional: shard_size (default 5000), max_samples
    [devices]                     # optional: target name -> board: profile jobs on that node
    edgetpu = "coral-1"           #   (they ask the executor for {"device:coral-1": 1})

A recipe is a frozen value: its ``to_dict()`` (without the name) is part of every job's cache
key, so renaming a recipe reuses its results and changing a value reruns only its jobs.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt_runtime.errors import EdgeOptError

DEFAULT_LATENCY_RUNS = 20
DEFAULT_SHARD_SIZE = 5000
_METHODS = ("minmax", "entropy", "percentile")
_FORMATS = ("tflite", "onnx", "all")


class SweepFileError(EdgeOptError):
    """The sweep file is missing, not TOML, or holds an unknown key or a bad value."""


@dataclass(frozen=True)
class TuneBudget:
    """What ``edgeopt tune`` is asked to meet, passed to it as keyword arguments.

    ``max_drop`` is the accuracy drop allowed (points, as ``--max-drop``); the rest of the keys
    (``max_trials``, ``timeout``, ``metric``, ...) are passed through unchanged, so the sweep
    does not need to change when tune gains an option.
    """

    max_drop: float | None = None
    options: tuple[tuple[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.options)
        if self.max_drop is not None:
            out["max_drop"] = self.max_drop
        return dict(sorted(out.items()))


@dataclass(frozen=True)
class Recipe:
    """How one job converts: overrides of convert's options and of the target profile, or a
    tune budget (then the overrides are the starting point tune searches from)."""

    name: str
    calib_method: str | None = None
    formats: tuple[str, ...] = ()
    keep_float: tuple[str, ...] = ()
    profile: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()  # section -> (key, value)
    tune: TuneBudget | None = None

    def to_dict(self) -> dict[str, Any]:
        """The recipe's content (not its name): what the cache key and the results show."""
        return {
            "calib_method": self.calib_method,
            "formats": list(self.formats),
            "keep_float": list(self.keep_float),
            "profile": {sec: dict(items) for sec, items in self.profile},
            "tune": self.tune.to_dict() if self.tune else None,
        }

    def profile_overrides(self) -> dict[str, dict[str, Any]]:
        return {sec: dict(items) for sec, items in self.profile}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    calib: Path | None
    val: Path | None = None
    num_calib: int | None = None
    preprocess: tuple[tuple[str, Any], ...] = ()
    trust_model: bool = False


@dataclass(frozen=True)
class SweepSpec:
    """A parsed, validated sweep file."""

    path: Path
    models: tuple[ModelEntry, ...]
    targets: tuple[str, ...]  # built-in names or absolute profile paths
    recipes: tuple[Recipe, ...]
    latency_runs: int = DEFAULT_LATENCY_RUNS
    seed: int = 0
    shard_size: int = DEFAULT_SHARD_SIZE
    max_val_samples: int | None = None
    devices: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @property
    def size(self) -> int:
        return len(self.models) * len(self.targets) * len(self.recipes)


# ------------------------------------------------------------------------------ parsing


def load_sweep(path: str | os.PathLike[str]) -> SweepSpec:
    """Read and validate a sweep file.

    Raises:
        SweepFileError: unreadable, invalid TOML, unknown keys, wrong types, missing files,
            duplicate names. The message names the file and the key.
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SweepFileError(f"{p}: sweep file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SweepFileError(f"{p}: cannot read sweep file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SweepFileError(f"{p}: invalid TOML: {exc}") from None
    return sweep_from_dict(data, p)


_TOP = {"targets", "model", "recipe", "settings", "validation", "devices"}


def sweep_from_dict(data: Mapping[str, Any], path: Path) -> SweepSpec:
    """Validate a parsed sweep document; relative paths are taken from ``path``'s folder."""
    where = str(path)
    _no_unknown(data, _TOP, where, "top-level")
    base = path.resolve().parent
    targets = _targets(data.get("targets"), base, where)
    models = _models(data.get("model"), base, where)
    recipes = _recipes(data.get("recipe", [{"name": "default"}]), where)
    settings = _table(data, "settings", where)
    _no_unknown(settings, {"latency_runs", "seed"}, where, "[settings]")
    validation = _table(data, "validation", where)
    _no_unknown(validation, {"shard_size", "max_samples"}, where, "[validation]")
    devices = _table(data, "devices", where)
    names = {Path(t).stem if t.endswith(".toml") else t for t in targets}
    for tname, board in devices.items():
        if tname not in names:
            raise SweepFileError(f"{where}: [devices] {tname!r} is not one of the targets "
                                 f"({', '.join(sorted(names))})")
        if not isinstance(board, str) or not board:
            raise SweepFileError(f"{where}: [devices] {tname} must be a board name string")
    return SweepSpec(
        path=path, models=models, targets=targets, recipes=recipes,
        latency_runs=_int(settings, "latency_runs", DEFAULT_LATENCY_RUNS, where, "[settings]"),
        seed=_int(settings, "seed", 0, where, "[settings]", minimum=0),
        shard_size=_int(validation, "shard_size", DEFAULT_SHARD_SIZE, where, "[validation]"),
        max_val_samples=_int(validation, "max_samples", None, where, "[validation]"),
        devices=tuple(sorted(devices.items())),
    )


def _no_unknown(d: Mapping[str, Any], allowed: set[str], where: str, what: str) -> None:
    bad = sorted(set(d) - allowed)
    if bad:
        raise SweepFileError(f"{where}: unknown {what} key(s) {', '.join(bad)}; allowed: "
                             f"{', '.join(sorted(allowed))}")


def _table(d: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    v = d.get(key, {})
    if not isinstance(v, dict):
        raise SweepFileError(f"{where}: [{key}] must be a table")
    return v


def _int(d: Mapping[str, Any], key: str, default: int | None, where: str, what: str,
         minimum: int = 1) -> int | None:
    v = d.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise SweepFileError(f"{where}: {what} {key} must be an integer >= {minimum}, got {v!r}")
    return v


def _path(base: Path, value: Any, where: str, what: str) -> Path:
    if not isinstance(value, str) or not value:
        raise SweepFileError(f"{where}: {what} must be a path string, got {value!r}")
    p = Path(value).expanduser()
    p = p if p.is_absolute() else base / p
    if not p.exists():
        raise SweepFileError(f"{where}: {what} = {value!r}: no such file or directory ({p})")
    return p


def _targets(value: Any, base: Path, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
        raise SweepFileError(f'{where}: targets must be a non-empty list of target names or '
                             f'profile paths, like targets = ["arm-cpu", "edgetpu"]')
    out = []
    for t in value:
        looks_like_path = t.endswith(".toml") or "/" in t
        out.append(str(_path(base, t, where, f"target {t!r}")) if looks_like_path else t)
    if len(set(out)) != len(out):
        raise SweepFileError(f"{where}: a target is listed twice in targets = {value}")
    return tuple(out)


_MODEL_KEYS = {"path", "name", "calib", "val", "num_calib", "preprocess", "trust_model"}


def _models(value: Any, base: Path, where: str) -> tuple[ModelEntry, ...]:
    if not isinstance(value, list) or not value:
        raise SweepFileError(f'{where}: no models: add at least one [[model]] table with '
                             f'path = "model.keras" and calib = "calib.npz"')
    out = []
    for i, m in enumerate(value):
        what = f"[[model]] #{i + 1}"
        if not isinstance(m, dict):
            raise SweepFileError(f"{where}: {what} must be a table")
        _no_unknown(m, _MODEL_KEYS, where, what)
        if "path" not in m:
            raise SweepFileError(f"{where}: {what} needs path = \"...\"")
        path = _path(base, m["path"], where, f"{what} path")
        name = m.get("name", path.stem if path.is_file() else path.name)
        if not isinstance(name, str) or not name or "/" in name:
            raise SweepFileError(f"{where}: {what} name must be a plain non-empty string")
        pre = m.get("preprocess", {})
        if not isinstance(pre, dict):
            raise SweepFileError(f"{where}: {what} preprocess must be a table")
        trust = m.get("trust_model", False)
        if not isinstance(trust, bool):
            raise SweepFileError(f"{where}: {what} trust_model must be true or false")
        out.append(ModelEntry(
            name=name, path=path,
            calib=_path(base, m["calib"], where, f"{what} calib") if "calib" in m else None,
            val=_path(base, m["val"], where, f"{what} val") if "val" in m else None,
            num_calib=_int(m, "num_calib", None, where, what),
            preprocess=tuple(sorted(pre.items())), trust_model=trust,
        ))
        if out[-1].calib is None:
            raise SweepFileError(f"{where}: {what} ({name}) needs calib = \"calib.npz\": "
                                 f"int8 conversion calibrates on real data")
    names = [m.name for m in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SweepFileError(f"{where}: model name(s) {', '.join(dup)} used twice; give each "
                             f"[[model]] its own name = \"...\"")
    return tuple(out)


_RECIPE_KEYS = {"name", "calib_method", "formats", "keep_float", "profile", "tune"}
_PROFILE_SECTIONS = ("quantization", "tflite", "onnx", "shapes", "ops", "runtime")


def _recipes(value: Any, where: str) -> tuple[Recipe, ...]:
    if not isinstance(value, list) or not value:
        raise SweepFileError(f"{where}: [[recipe]] must be one or more tables")
    out = [_recipe(r, i, where) for i, r in enumerate(value)]
    names = [r.name for r in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SweepFileError(f"{where}: recipe name(s) {', '.join(dup)} used twice")
    return tuple(out)


def _recipe(r: Any, i: int, where: str) -> Recipe:
    what = f"[[recipe]] #{i + 1}"
    if not isinstance(r, dict):
        raise SweepFileError(f"{where}: {what} must be a table")
    _no_unknown(r, _RECIPE_KEYS, where, what)
    name = r.get("name")
    if not isinstance(name, str) or not name or "/" in name:
        raise SweepFileError(f"{where}: {what} needs name = \"...\" (a plain string)")
    what = f"recipe {name!r}"
    method = r.get("calib_method")
    if method is not None and method not in _METHODS:
        raise SweepFileError(f"{where}: {what} calib_method = {method!r}; use one of "
                             f"{', '.join(_METHODS)}")
    formats = r.get("formats", [])
    formats = [formats] if isinstance(formats, str) else formats
    if not isinstance(formats, list) or any(f not in _FORMATS for f in formats):
        raise SweepFileError(f"{where}: {what} formats = {r.get('formats')!r}; use a list of "
                             f"{', '.join(_FORMATS)}")
    keep = r.get("keep_float", [])
    if not isinstance(keep, list) or not all(isinstance(k, str) for k in keep):
        raise SweepFileError(f"{where}: {what} keep_float must be a list of regex strings")
    return Recipe(
        name=name, calib_method=method, formats=tuple(formats), keep_float=tuple(keep),
        profile=_profile_overrides(r.get("profile", {}), where, what),
        tune=_tune(r["tune"], where, what) if "tune" in r else None,
    )


def _profile_overrides(p: Any, where: str, what: str) -> tuple:
    if not isinstance(p, dict):
        raise SweepFileError(f"{where}: {what} profile must be a table of profile sections")
    bad = sorted(set(p) - set(_PROFILE_SECTIONS))
    if bad:
        raise SweepFileError(f"{where}: {what} profile: unknown section(s) {', '.join(bad)}; "
                             f"allowed: {', '.join(_PROFILE_SECTIONS)}")
    out = []
    for sec in sorted(p):
        if not isinstance(p[sec], dict):
            raise SweepFileError(f"{where}: {what} profile.{sec} must be a table")
        out.append((sec, tuple(sorted((k, _freeze(v)) for k, v in p[sec].items()))))
    return tuple(out)


def _freeze(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def _tune(t: Any, where: str, what: str) -> TuneBudget:
    if not isinstance(t, dict):
        raise SweepFileError(f"{where}: {what} tune must be a table like "
                             f"tune = {{ max_drop = 0.5 }}")
    drop = t.get("max_drop")
    if drop is not None and (isinstance(drop, bool) or not isinstance(drop, (int, float))
                             or not math.isfinite(drop) or drop < 0):
        raise SweepFileError(f"{where}: {what} tune.max_drop must be a number >= 0 (accuracy "
                             f"points), got {drop!r}")
    rest = tuple(sorted((k, _freeze(v)) for k, v in t.items() if k != "max_drop"))
    return TuneBudget(float(drop) if drop is not None else None, rest)
