"""Regenerate the bundled example: real digits calibration data and a tiny Keras CNN.

Seeded and deterministic. Needs scikit-learn (for its bundled copy of the UCI handwritten
digits, no download) on top of the converter's dependencies; scikit-learn is a dependency of
this script only, never of edgeopt::

    pip install scikit-learn
    python scripts/make_example.py            # from the repository root

Writes:
    calibration_data/digits/calib.npz   200 samples: input float32[N,16,16,1] in [0,1], labels
    calibration_data/digits/val.npz     300 held-out samples, same layout
    calibration_data/digits/images/     the first 32 calibration samples as 16x16 grayscale PNGs
    examples/digits_cnn.keras           Conv-ReLU-Pool-Conv-ReLU-GAP-Dense-softmax, input 'input'
    examples/digits_cnn.h5              the same model in the legacy HDF5 format

Every 16x16 image is built as uint8 first and ``calib.npz`` holds ``png * float32(1/255)``: the
image-directory reader with its default preprocessing reproduces the npz samples bit for bit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SEED = 0
N_CALIB, N_VAL, N_IMAGES = 200, 300, 32
SIZE = 16
ROOT = Path(__file__).resolve().parent.parent


def load_digits_16x16() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 UCI digits as uint8 [N, 16, 16] (bilinear 2x upsampling of the 8x8 originals)
    and their int64 labels."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
    big = np.stack(
        [
            np.asarray(Image.fromarray(im).resize((SIZE, SIZE), Image.Resampling.BILINEAR))
            for im in small
        ]
    )
    return big, digits.target.astype(np.int64)


def split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint calibration / validation / training indices from one seeded permutation."""
    order = np.random.default_rng(seed).permutation(n)
    return order[:N_CALIB], order[N_CALIB : N_CALIB + N_VAL], order[N_CALIB + N_VAL :]


def to_input(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 16, 16] -> the model's float32 [N, 16, 16, 1] in [0, 1].

    ``x * float32(1/255)``, exactly what ``Preprocessing()``'s default ``scale`` computes for
    images, so the PNGs and the npz give bit-identical samples.
    """
    return (images.astype(np.float32) * np.float32(1 / 255.0))[..., None]


def write_npz(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write ``input`` and ``labels`` to ``path`` atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez_compressed(tmp, input=to_input(images), labels=labels)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_pngs(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write 16x16 grayscale PNGs into ``folder``, replacing it whole once all are written."""
    from PIL import Image

    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".images-"))
    try:
        for i, (im, label) in enumerate(zip(images, labels, strict=True)):
            Image.fromarray(im, mode="L").save(tmp / f"{i:03d}_digit{label}.png", optimize=True)
        tmp.chmod(0o755)  # mkdtemp makes it owner-only
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def build_model():  # noqa: ANN201 (keras is imported lazily)
    """Conv-ReLU-Pool-Conv-ReLU-GAP-Dense-softmax: ops every target (incl. Edge TPU) runs."""
    import keras

    inp = keras.Input(shape=(SIZE, SIZE, 1), name="input")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inp)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(10, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name="digits_cnn")


def train(
    x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, epochs: int
) -> tuple[object, float]:
    """Train the CNN from a fixed seed; return the model and its validation accuracy."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    model = build_model()
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=32, epochs=epochs, shuffle=True, verbose=0)
    # Ship an uncompiled copy: no optimizer state in the file, nothing to warn about on load.
    clean = build_model()
    clean.set_weights(model.get_weights())
    probs = clean.predict(x_val, batch_size=256, verbose=0)
    return clean, float((probs.argmax(axis=1) == y_val).mean())


def save_model(model: object, path: Path) -> None:
    """Save via a temp file in the same folder (Keras picks the format from the suffix)."""
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def main(argv: list[str] | None = None) -> int:
    """Regenerate everything; return 0, or 1 if the model misses the accuracy bar."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=ROOT, help="repository root to write into")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--min-accuracy", type=float, default=0.9)
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    images, labels = load_digits_16x16()
    calib, val, rest = split(len(images), SEED)
    data = args.root / "calibration_data" / "digits"
    write_npz(data / "calib.npz", images[calib], labels[calib])
    write_npz(data / "val.npz", images[val], labels[val])
    write_pngs(data / "images", images[calib[:N_IMAGES]], labels[calib[:N_IMAGES]])

    start = time.perf_counter()
    model, acc = train(
        to_input(images[rest]), labels[rest], to_input(images[val]), labels[val], args.epochs
    )
    print(
        f"trained on {len(rest)} digits in {time.perf_counter() - start:.1f} s: "
        f"val accuracy {acc:.3f} on {len(val)}",
        file=sys.stderr,
    )
    if acc < args.min_accuracy:
        print(f"error: val accuracy {acc:.3f} < {args.min_accuracy}", file=sys.stderr)
        return 1
    examples = args.root / "examples"
    examples.mkdir(exist_ok=True)
    for name in ("digits_cnn.keras", "digits_cnn.h5"):
        save_model(model, examples / name)
        print(
            f"wrote {examples / name} ({(examples / name).stat().st_size} bytes)", file=sys.stderr
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
