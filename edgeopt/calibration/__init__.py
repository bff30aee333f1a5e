"""Calibration data: readers that stream samples shaped and typed like a model's inputs.

``open_calibration(path, inputs)`` picks a reader from a registry (``.npz``, ``.npy``, a
directory of images, a directory of ``.npy``/``.npz`` files), checks every stored array's shape
and dtype against the model inputs from the file headers alone, then makes one streaming pass
that converts each selected sample, rejects NaN/Inf and hashes the raw bytes. The returned
``CalibrationSource`` yields one ``{input name: array}`` dict per sample (batch dim 1, the input's
dtype) and never holds more than one sample per input in memory.

Memory bound: one sample per input at a time, plus the selected indices and the labels (one
small array each), plus for a Fortran-ordered array inside an ``.npz`` the whole member (a
warning says so). ``.npy`` files are memory-mapped; ``.npz`` members are read row by row from the
zip stream (random access for stored members, a forward-only stream for compressed ones).

The package, by concept (data flows top to bottom)::

    registry.py       CalibrationReader interface, register_reader / reader_names
    readers/          one module per storage kind: npz, npy (+ files: what both share),
                      arrays (file and folder readers over them), images, synthetic
    layout.py         shape / dtype planning from headers: how a stored array holds samples
    preprocessing.py  Preprocessing (images: resize, color, layout; all: scale, mean, std)
    values.py         raw values -> model input (normalize, cast, range checks)
    hashing.py        the calibration hash recorded in the manifest
    source.py         open_calibration -> CalibrationSource (validating pass, hash, stream)
"""

from __future__ import annotations

from .hashing import HASH_SCHEMA
from .preprocessing import Preprocessing
from .readers import (
    ARRAY_SUFFIXES,
    IMAGE_SUFFIXES,
    ArrayDirReader,
    ImageDirReader,
    NpyReader,
    NpzReader,
    SyntheticReader,
)
from .readers.npz import LABEL_KEYS
from .registry import CalibrationReader, reader_names, register_reader
from .source import DEFAULT_SYNTHETIC_SAMPLES, CalibrationSource, open_calibration

__all__ = [
    "ARRAY_SUFFIXES",
    "DEFAULT_SYNTHETIC_SAMPLES",
    "HASH_SCHEMA",
    "IMAGE_SUFFIXES",
    "LABEL_KEYS",
    "ArrayDirReader",
    "CalibrationReader",
    "CalibrationSource",
    "ImageDirReader",
    "NpyReader",
    "NpzReader",
    "Preprocessing",
    "SyntheticReader",
    "open_calibration",
    "reader_names",
    "register_reader",
]
