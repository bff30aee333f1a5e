"""Recipe files: the recipe ``edgeopt tune`` chose, written so ``edgeopt convert`` rebuilds it.

``OUT/<target>/recipe.toml`` holds one table per format (``[onnx]``, ``[tflite]``), each a
``Recipe.to_dict()``; ``edgeopt convert MODEL --target T --calib C --recipe recipe.toml``
builds exactly those recipes (one artifact per format in the file) instead of the target
profile's defaults. Reading checks every key (``Recipe.from_dict``) and names the file.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .recipe import Recipe, RecipeError

SCHEMA = "edgeopt.recipe/1"


def dumps(recipes: Mapping[str, Recipe], header: str = "") -> str:
    """TOML text of ``recipes`` (format -> recipe), with ``header`` as leading comments."""
    import tomli_w

    doc: dict[str, Any] = {"schema": SCHEMA}
    for fmt, recipe in recipes.items():
        doc[fmt] = recipe.to_dict()
    comments = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return comments + tomli_w.dumps(doc)


def write(path: Path, recipes: Mapping[str, Recipe], header: str = "") -> Path:
    """Write ``recipes`` to ``path`` (temp file, then rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(dumps(recipes, header), encoding="utf-8")
    os.replace(tmp, path)
    return path


def read(path: str | os.PathLike[str]) -> dict[str, Recipe]:
    """format -> Recipe from a recipe file.

    Raises:
        RecipeError: unreadable file, not TOML, no recipe, a table whose format differs from
            its name, or an invalid recipe (the message names the file and the table).
    """
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RecipeError(f"--recipe {p}: cannot read it ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(f"--recipe {p}: not a TOML recipe file ({exc})") from None
    schema = doc.pop("schema", SCHEMA)
    if schema != SCHEMA:
        raise RecipeError(f"--recipe {p}: schema {schema!r} is not {SCHEMA!r}")
    out: dict[str, Recipe] = {}
    for fmt, table in doc.items():
        if fmt not in ("onnx", "tflite"):
            raise RecipeError(f"--recipe {p}: unknown table [{fmt}]; expected [onnx] and/or "
                              "[tflite] (as `edgeopt tune` writes OUT/<target>/recipe.toml)")
        if not isinstance(table, dict):
            raise RecipeError(f"--recipe {p}: [{fmt}] must be a table")
        try:
            recipe = Recipe.from_dict({"format": fmt, **table})
        except RecipeError as exc:
            raise RecipeError(f"--recipe {p} [{fmt}]: {exc}") from None
        if recipe.format.value != fmt:
            raise RecipeError(f"--recipe {p}: table [{fmt}] holds a {recipe.format.value} "
                              "recipe")
        out[fmt] = recipe
    if not out:
        raise RecipeError(f"--recipe {p}: no [onnx] or [tflite] recipe in it")
    return out
