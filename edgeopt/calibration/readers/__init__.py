"""The built-in calibration readers; importing this package registers them.

``npz`` / ``npy`` / ``array-dir`` (``arrays.py`` over ``npz.py`` and ``npy.py``), ``image-dir``
(``images.py``); ``synthetic.py`` is not registered (only ``--allow-synthetic`` makes it).
"""

from __future__ import annotations

from .arrays import ARRAY_SUFFIXES, ArrayDirReader, NpyReader, NpzReader
from .images import IMAGE_SUFFIXES, ImageDirReader
from .synthetic import SyntheticReader

__all__ = [
    "ARRAY_SUFFIXES",
    "IMAGE_SUFFIXES",
    "ArrayDirReader",
    "ImageDirReader",
    "NpyReader",
    "NpzReader",
    "SyntheticReader",
]
