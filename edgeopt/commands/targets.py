"""``edgeopt targets list`` and ``edgeopt targets show NAME_OR_TOML``."""

from __future__ import annotations

import json
from typing import Any

import click

from edgeopt.targets import TargetProfile, builtin_dir, builtin_names, load_target


def _row(p: TargetProfile) -> dict[str, Any]:
    return {
        "name": p.name,
        "description": p.description,
        "formats": [f.value for f in p.formats],
        "scheme": p.quantization.scheme.value,
        "extra_variants": [s.value for s in p.tflite.extra_variants],
        "io_dtype": p.tflite.io_dtype.value,
        "float_fallback": p.quantization.float_fallback,
        "delegate": p.runtime.tflite_delegate.value,
        "path": p.path,
    }


@click.group("targets")
def command() -> None:
    """List and show target profiles (built-in names, or your own .toml path)."""


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def list_targets(as_json: bool) -> None:
    """List the built-in target profiles."""
    rows = [_row(load_target(n)) for n in builtin_names()]
    if as_json:
        click.echo(json.dumps({"targets": rows, "directory": str(builtin_dir())}, indent=2))
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        variants = "+".join([r["scheme"], *r["extra_variants"]])
        click.echo(
            f"{r['name']:<{width}}  {','.join(r['formats']):<11} {variants:<14} "
            f"io={r['io_dtype']:<7} fallback={'yes' if r['float_fallback'] else 'no ':<3}  "
            f"{r['description']}"
        )


@command.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def show_target(name: str, as_json: bool) -> None:
    """Show every setting of one profile (NAME or a path to a .toml file)."""
    profile = load_target(name)
    data = profile.to_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"{profile.name}: {profile.description}")
    click.echo(f"  file: {profile.path}")
    click.echo(f"  formats: {', '.join(data['formats'])}")
    for section in ("quantization", "tflite", "onnx", "shapes", "runtime"):
        values = ", ".join(f"{k}={_fmt(v)}" for k, v in data[section].items())
        click.echo(f"  [{section}] {values}")
    ops = data["ops"]["supported"]
    click.echo(f"  [ops] supported: {', '.join(ops) if ops else 'every builtin op'}")


def _fmt(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(map(str, v)) + "]"
    return "none" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
