"""``edgeopt compress MODEL --data TRAIN [steps] --out COMPRESSED``.

Writes ``COMPRESSED/model.<suffix>`` (a float model in the source's format, ready for
``edgeopt convert``) and ``COMPRESSED/report.{json,md,html}``. ``--json`` prints the report as one
JSON document on stdout; progress lines go to stderr. Errors a user can cause exit 2 with one
line and leave nothing under COMPRESSED.
"""

from __future__ import annotations

from pathlib import Path

import click

_CRITERIA = ["auto", "l1", "l2", "taylor"]
_DISTILL_LOSSES = ["auto", "kl", "mse"]


@click.command("compress")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path),
              help="Training data (.npz/.npy/image folder/folder of arrays, like --calib); "
              "labels optional with --distill.")
@click.option("--val", type=click.Path(path_type=Path),
              help="Held-out data for accuracy and drift (default: the training data).")
@click.option("--prune", type=float, metavar="SPARSITY",
              help="Magnitude pruning: fraction of zero weights per kernel, in [0, 1).")
@click.option("--prune-channels", type=float, metavar="FRACTION",
              help="Structured pruning: fraction of filters/units removed per layer, in [0, 1).")
@click.option("--criterion", type=click.Choice(_CRITERIA), default="auto", show_default=True,
              help="Filter ranking for --prune-channels; auto = taylor with labels, else l1.")
@click.option("--prune-first", is_flag=True,
              help="Also prune the first layer(s) (left dense by default: they are small and "
              "sensitive).")
@click.option("--cluster", type=int, metavar="K",
              help="Weight clustering: K shared values per kernel (K >= 2).")
@click.option("--distill", is_flag=True,
              help="Fine-tune against the float original as teacher (works without labels).")
@click.option("--distill-loss", type=click.Choice(_DISTILL_LOSSES), default="auto",
              show_default=True, help="KL on softened class scores, or MSE on outputs.")
@click.option("--temperature", type=float, default=4.0, show_default=True,
              help="Distillation temperature.")
@click.option("--qat", is_flag=True,
              help="Quantization-aware fine-tuning (fake-quant weights and activations).")
@click.option("--epochs", type=int, default=2, show_default=True,
              help="Fine-tuning epochs per step (0: post-training, no fine-tuning).")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--learning-rate", type=float, default=1e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--skip", multiple=True, metavar="REGEX",
              help="Leave layers whose name matches REGEX alone (re.search). Repeatable.")
@click.option("--target", "targets", multiple=True, metavar="NAME_OR_TOML",
              help="Targets the gains are measured for (default arm-cpu). Repeatable.")
@click.option("--format", "fmt", type=click.Choice(["tflite", "onnx", "all"]), default="all",
              show_default=True, help="Formats the gains are measured in.")
@click.option("--no-measure", is_flag=True,
              help="Skip converting both models and measuring size/latency/accuracy.")
@click.option("--no-ablation", is_flag=True,
              help="With --distill: do not also run the steps without distillation.")
@click.option("--binarize", is_flag=True, help="Binarise (refused: see docs/compression.md).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Output folder: model + report.")
@click.option("--force", is_flag=True, help="Replace an existing OUT of edgeopt output.")
@click.option("--trust-model", is_flag=True,
              help="Let Keras run Python code stored in the model (Lambda layers).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def command(model: Path, data: Path | None, val: Path | None, prune: float | None,
            prune_channels: float | None, prune_first: bool, criterion: str,
            cluster: int | None, distill: bool,
            distill_loss: str, temperature: float, qat: bool, epochs: int, batch_size: int,
            learning_rate: float, seed: int, skip: tuple[str, ...], targets: tuple[str, ...],
            fmt: str, no_measure: bool, no_ablation: bool, binarize: bool, out: Path, force: bool,
            trust_model: bool, as_json: bool) -> None:
    """Prune, cluster, distill or QAT-fine-tune MODEL (.keras, .h5; .onnx: --prune/--cluster).

    Example: edgeopt compress model.keras --data train.npz --val val.npz --prune 0.5
    --cluster 16 --distill --epochs 3 --out compressed
    """
    from edgeopt.artifact import Interrupted
    from edgeopt.compress.options import CompressOptions, Criterion, DistillLoss, parse_enum
    from edgeopt.compress.pipeline import compress
    from edgeopt.compress.report import summary_lines
    from edgeopt.report import dumps

    from .convert import _progress  # the same "edgeopt: ..." progress lines on stderr

    if binarize:
        from edgeopt.compress.binarize import REASON, BinarizeUnavailable

        raise BinarizeUnavailable(REASON)
    options = CompressOptions(
        prune=prune, prune_channels=prune_channels, cluster=cluster, distill=distill, qat=qat,
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
        temperature=temperature, distill_loss=parse_enum(DistillLoss, "--distill-loss",
                                                         distill_loss),
        criterion=parse_enum(Criterion, "--criterion", criterion), prune_first=prune_first,
        seed=seed)
    try:
        report = compress(
            model, data, options, val=val, out=out, targets=list(targets) or ["arm-cpu"],
            formats=fmt,
            measure_gains=not no_measure, ablation=not no_ablation, skip=skip, force=force,
            trust_model=trust_model, progress=_progress(True),
        )
    except Interrupted as exc:
        click.echo(f"edgeopt: {exc}; temporary files removed, nothing written to {out}",
                   err=True)
        raise SystemExit(128 + exc.signum) from None
    if as_json:
        click.echo(dumps(report.data), nl=False)
        return
    for line in summary_lines(report.data):
        click.echo(line)
    click.echo(f"wrote {report.model_path} (report: {out / 'report.md'}, {out / 'report.html'})")
    click.echo(f"next: {report.data['output']['next']}")
