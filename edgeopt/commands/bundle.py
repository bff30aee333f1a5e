"""``edgeopt bundle OUT/target [--out DIR] [--data FILE] [--samples N] [--json]``.

Writes a deploy bundle (``edgeopt/deploy/bundle.py``): the artifact's models and manifest, a
snapshot of the target profile, golden inputs with this machine's outputs for them, a README and
``bundle.json`` with the sha256 of every file. The device needs only ``edgeopt-runtime``:
``python3 -m edgeopt_runtime check BUNDLE`` verifies the files and compares the outputs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

_TOLERANCE_KEYS = {"steps": "quantized_steps", "atol": "atol", "rtol": "rtol"}


def tolerance_options(steps: float | None, atol: float | None, rtol: float | None) -> dict:
    """The golden-check tolerance overrides given on the command line."""
    given = {"steps": steps, "atol": atol, "rtol": rtol}
    for key, value in given.items():
        if value is not None and not value >= 0:
            from edgeopt_runtime.errors import EdgeOptError

            raise EdgeOptError(f"--tolerance-{key} must be >= 0, got {value}")
    return {_TOLERANCE_KEYS[k]: float(v) for k, v in given.items() if v is not None}


def golden_options(fn):
    """Options shared by ``bundle`` and ``deploy`` (the golden data and its tolerance)."""
    for opt in reversed(
        [
            click.option(
                "--data",
                type=click.Path(path_type=Path),
                help="Golden inputs (.npz/.npy/image folder, as --val); default: "
                "seeded random inputs.",
            ),
            click.option(
                "--samples",
                type=click.IntRange(1, 1000),
                default=8,
                show_default=True,
                help="Number of golden samples.",
            ),
            click.option(
                "--seed",
                type=int,
                default=0,
                show_default=True,
                help="Seed of the sample choice / random inputs.",
            ),
            click.option(
                "--tolerance-steps",
                type=float,
                help="Allowed difference of quantized outputs, in quantization steps (default 2).",
            ),
            click.option("--tolerance-atol", type=float, help="Float outputs: absolute tolerance."),
            click.option("--tolerance-rtol", type=float, help="Float outputs: relative tolerance."),
        ]
    ):
        fn = opt(fn)
    return fn


@click.command("bundle")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Bundle folder (default: <OUT>/bundles/<model>-<target>).",
)
@click.option("--name", help="Bundle name, also its folder name on devices.")
@click.option("--target", help="Target profile to snapshot when the artifact's is not found.")
@golden_options
@click.option("--json", "as_json", is_flag=True, help="Print bundle.json on stdout.")
def command(
    artifact: Path,
    out: Path | None,
    name: str | None,
    target: str | None,
    data: Path | None,
    samples: int,
    seed: int,
    tolerance_steps: float | None,
    tolerance_atol: float | None,
    tolerance_rtol: float | None,
    as_json: bool,
) -> None:
    """Make a self-checking deploy bundle of ARTIFACT (an OUT/<target> folder)."""
    from edgeopt.deploy.bundle import build_bundle

    bundle = build_bundle(
        artifact,
        out,
        data=data,
        samples=samples,
        seed=seed,
        target=target,
        name=name,
        tolerance=tolerance_options(tolerance_steps, tolerance_atol, tolerance_rtol),
        log=lambda line: click.echo(f"edgeopt: {line}", err=True),
    )
    if as_json:
        sys.stdout.write(
            json.dumps(
                {
                    **bundle.index.data,
                    "path": str(bundle.directory),
                    "index_sha256": bundle.index_sha256,
                },
                indent=2,
            )
            + "\n"
        )
        return
    click.echo(f"{bundle.directory}: {len(bundle.expected())} files, {bundle.total_bytes} bytes")
    click.echo(f"on the device: python3 -m edgeopt_runtime check {bundle.directory.name}")
