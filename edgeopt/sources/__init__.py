"""Source models: read a float Keras / SavedModel / ONNX model into one ``ModelSource``.

Source files are untrusted: each loader checks its file before the framework reads it.
``.keras``: zip structure (CRC, member paths, symlinks, duplicates, bomb-sized members).
``.h5`` and the weights inside ``.keras``: read completely once by h5py in a child process with
a time and memory bound (a damaged HDF5 file was found to loop the HDF5 library forever), with
external links / external storage and NaN weights refused. Keras configs: Lambda layers and
modules outside Keras refused unless ``trust_model``. SavedModel: symlinks out of the folder,
FIFOs, and graph ops that touch files or call Python refused. ONNX: external-data references
must stay inside the model's folder and are checked before any byte is read; names must be
UTF-8; NaN weights refused.

The package, by concept (a path flows top to bottom)::

    registry.py    ModelSource, the loader registry, load_source (dispatch on the path)
    checks.py      checks for any file / folder (regular file, links, FIFOs), hashing
    archive.py     .keras zip structure           hdf5_probe.py  bounded child-process HDF5 read
    keras.py       .keras / .h5 loader + config scan for code
    savedmodel.py  SavedModel loader + graph-op scan
    onnx.py        ONNX loader: external data, strings, NaN weights, old-opset clean-up

Loaders register in the order their modules are imported below (the first that accepts a path
loads it).
"""

from __future__ import annotations

# isort: off
from . import keras, savedmodel, onnx  # noqa: F401  (registers the loaders, in this order)
# isort: on
from .checks import check_tree, sha256_tree
from .hdf5_probe import main as hdf5_probe_main
from .keras import scan_keras_config
from .onnx import check_onnx_strings, clean_onnx, load_onnx_external_data, onnx_tensors
from .registry import (
    SOURCE_FORMATS,
    Loader,
    ModelSource,
    load_source,
    loader_names,
    register_loader,
)
from .savedmodel import UNTRUSTED_TF_OPS, check_savedmodel_ops

__all__ = [
    "SOURCE_FORMATS",
    "UNTRUSTED_TF_OPS",
    "Loader",
    "ModelSource",
    "check_onnx_strings",
    "check_savedmodel_ops",
    "check_tree",
    "clean_onnx",
    "hdf5_probe_main",
    "load_onnx_external_data",
    "load_source",
    "loader_names",
    "onnx_tensors",
    "register_loader",
    "sha256_tree",
    "scan_keras_config",
]
