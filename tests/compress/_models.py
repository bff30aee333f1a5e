"""Tiny seeded Keras models and data for the compress tests (built once per session)."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HWC = (8, 8, 3)
CLASSES = 4
N = 96


@functools.cache
def root() -> Path:
    d = Path(tempfile.mkdtemp(prefix="edgeopt-compresstest-"))
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    return d


def images(n: int = N, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, *HWC)).astype(np.float32)


def labels_for(x: np.ndarray) -> np.ndarray:
    """A learnable labelling: which quadrant of the mean image is brightest."""
    m = x.mean(axis=-1)
    q = np.stack([m[:, :4, :4].mean((1, 2)), m[:, :4, 4:].mean((1, 2)),
                  m[:, 4:, :4].mean((1, 2)), m[:, 4:, 4:].mean((1, 2))], axis=1)
    return q.argmax(axis=1).astype(np.int64)


def cnn(seed: int = 0):  # noqa: ANN201 - keras type
    """Conv -> ReLU -> Conv -> ReLU -> GAP -> Dense -> softmax (with a Flatten-free head)."""
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input(HWC, name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inp)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Conv2D(16, 1, activation="relu", name="pw")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(16, activation="relu", name="fc")(x)
    out = keras.layers.Dense(CLASSES, activation="softmax", name="probs")(x)
    return keras.Model(inp, out)


@functools.cache
def trained_cnn_file() -> Path:
    """``cnn()`` trained a few epochs on ``labels_for`` (seeded)."""
    import keras

    model = cnn()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    x = images(256, seed=1)
    model.fit(x, labels_for(x), epochs=5, batch_size=32, verbose=0)
    clean = cnn()
    clean.set_weights(model.get_weights())
    path = root() / "cnn.keras"
    clean.save(path)
    return path


@functools.cache
def train_npz(labels: bool = True) -> Path:
    x = images()
    path = root() / ("train.npz" if labels else "train_nolabels.npz")
    arrays = {"image": x, **({"labels": labels_for(x)} if labels else {})}
    np.savez(path, **arrays)
    return path


@functools.cache
def val_npz() -> Path:
    x = images(48, seed=5)
    path = root() / "val.npz"
    np.savez(path, image=x, labels=labels_for(x))
    return path
