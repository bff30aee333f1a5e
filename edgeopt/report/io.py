"""The report file: strict JSON (non-finite floats as strings), atomic writes, reading back.

``write_report`` renders what the JSON says (parsed back from the text it writes), so the
Markdown and HTML of a report can always be re-made from its ``report.json``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeopt_runtime.errors import EdgeOptError

from edgeopt.results import SCHEMA

from .html import render_html
from .markdown import render_markdown

# Non-finite floats are not JSON: they are written as these strings and read back as floats.
_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


class ReportError(EdgeOptError):
    """A report file cannot be read, is not an edgeopt report, or has an unsupported schema."""


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays unwrapped, non-finite floats as strings."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return to_jsonable(obj.tolist())  # numpy array or scalar
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    raise TypeError(f"report: cannot encode {type(obj).__name__} as JSON")


def from_jsonable(obj: Any) -> Any:
    """Inverse of :func:`to_jsonable` for the non-finite float strings."""
    if isinstance(obj, dict):
        return {k: from_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_jsonable(v) for v in obj]
    if isinstance(obj, str) and obj in _NONFINITE:
        return _NONFINITE[obj]
    return obj


def dumps(report: Mapping[str, Any]) -> str:
    """The report as strict JSON text (no NaN/Infinity literals)."""
    return json.dumps(to_jsonable(report), indent=2, allow_nan=False) + "\n"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_report(
    report: Mapping[str, Any], out_dir: str | os.PathLike[str], stem: str = "report",
) -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.md`` and ``<stem>.html`` atomically into ``out_dir``.

    Returns:
        ``{"json": path, "md": path, "html": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = dumps(report)
    plain = from_jsonable(json.loads(text))  # render what the JSON says, not the live objects
    paths = {"json": out / f"{stem}.json", "md": out / f"{stem}.md", "html": out / f"{stem}.html"}
    _atomic_write(paths["json"], text)
    _atomic_write(paths["md"], render_markdown(plain))
    _atomic_write(paths["html"], render_html(plain))
    return paths


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check an ``edgeopt.report/1`` file (a report directory finds its report.json).

    Raises:
        ReportError: missing, not JSON, not an edgeopt report, or a different major schema.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{p}: no such report file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{p}: cannot read: {exc}") from None
    except ValueError as exc:
        raise ReportError(f"{p}: not JSON ({exc})") from None
    schema = data.get("schema") if isinstance(data, dict) else None
    if not isinstance(schema, str) or not schema.startswith("edgeopt.report/"):
        raise ReportError(f"{p}: expected an edgeopt report (schema {SCHEMA!r}), got "
                          f"schema {schema!r}")
    if schema.split("/", 1)[1].split(".")[0] != SCHEMA.split("/", 1)[1]:
        raise ReportError(f"{p}: schema {schema!r} is not supported (this edgeopt reads {SCHEMA})")
    return from_jsonable(data)
