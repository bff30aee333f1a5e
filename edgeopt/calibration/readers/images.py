"""Image directories: PNG / JPEG files decoded one at a time, with Pillow's decompression-bomb
guard at our own pixel limit."""

from __future__ import annotations

import contextlib
import io
import os
import struct
import warnings as pywarnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from edgeopt_runtime.errors import CalibrationError

from ...limits import MAX_IMAGE_PIXELS
from ..layout import dims_match, fmt_shape
from ..preprocessing import Preprocessing, ValueStats
from ..registry import CalibrationReader, register_reader
from ..values import channel_vector, to_dtype
from .files import listing

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@contextlib.contextmanager
def _pillow_guard(where: str) -> Iterator[None]:
    """Apply our pixel limit and turn Pillow's bomb warning/error and decode errors into ours."""
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with pywarnings.catch_warnings():
            pywarnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise CalibrationError(
            f"{where}: image too large ({exc}); the limit is "
            f"{MAX_IMAGE_PIXELS} pixels: downscale it first"
        ) from None
    except (OSError, ValueError, SyntaxError, struct.error) as exc:
        raise CalibrationError(f"{where}: cannot decode image ({exc})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old


@register_reader
class ImageDirReader(CalibrationReader):
    """A directory of PNG / JPEG images (single-input models), decoded one at a time."""

    name = "image-dir"

    @classmethod
    def matches(cls, path: Path) -> bool:
        return path.is_dir() and bool(listing(path, IMAGE_SUFFIXES))

    def _open(self) -> None:
        path, display, inputs = self.path, self.display, self.inputs
        if len(inputs) != 1:
            raise CalibrationError(
                f"{display}: an image directory feeds one input but the model has {len(inputs)} "
                f"({', '.join(s.name for s in inputs)}): use an .npz with one key per input"
            )
        self.spec = inputs[0]
        self.pre = self._resolve(self.preprocessing)
        self.files = listing(path, IMAGE_SUFFIXES)
        self.count = len(self.files)
        self._check_spec()
        self._mean = channel_vector(display, self.spec, self.pre, self.pre.mean, "mean")
        self._std = channel_vector(display, self.spec, self.pre, self.pre.std, "std")
        self._dtype = np.dtype(self.spec.dtype)
        self._before = ValueStats()
        self._collect = True

    def _resolve(self, pre: Preprocessing | None) -> Preprocessing:
        """Fill in defaults from the model input: layout and color if not given, resize always."""
        shape = self.spec.shape
        if pre is None:
            channels_first = len(shape) == 4 and shape[1] in (1, 3) and shape[3] not in (1, 3)
            layout = "NCHW" if channels_first else "NHWC"
            c = shape[1] if channels_first else shape[-1]
            pre = Preprocessing(layout=layout, color="grayscale" if c == 1 else "rgb")
            self.warnings.append(
                f"{self.display}: no image preprocessing given: using {pre.layout}, {pre.color}, "
                "x/255 (inputs in [0, 1]); pass preprocessing if the model expects another range"
            )
        if pre.resize is None and len(shape) == 4:
            hw = (shape[2], shape[3]) if pre.layout == "NCHW" else (shape[1], shape[2])
            if None not in hw:
                pre = replace(pre, resize=hw)
        return pre

    def _check_spec(self) -> None:
        """Check the images as preprocessed will match the input, before decoding any of them."""
        spec, pre = self.spec, self.pre
        h, w = pre.resize or (None, None)
        got = (1, pre.channels, h, w) if pre.layout == "NCHW" else (1, h, w, pre.channels)
        problems = []
        if len(spec.shape) != 4:
            problems.append("images feed rank-4 inputs only: use .npy/.npz data")
        elif pre.resize is None:
            problems.append("the input's height/width are dynamic: set preprocessing resize")
        elif not dims_match(got[1:], spec.shape[1:]):
            problems.append(
                f"preprocessing gives {fmt_shape(spec.dtype, got)} ({pre.layout}, "
                f"{pre.color}, resize {pre.resize}): set layout / color / resize to "
                "match the input"
            )
        if np.dtype(spec.dtype).kind not in "fiu":
            problems.append(f"images cannot feed a {spec.dtype} input")
        if problems:
            raise CalibrationError(
                f"{self.display}: input '{spec.name}' expects "
                f"{fmt_shape(spec.dtype, spec.shape)}: {'; '.join(problems)}"
            )

    def manifest_preprocessing(self) -> dict[str, Any] | None:
        return self.pre.to_dict()

    def values_before(self, collect: bool) -> dict[str, Any]:
        self._collect = collect
        return {self.spec.name: self._before} if self._before.count else {}

    def read(self, indices: np.ndarray) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        for i in indices:
            where = os.path.join(self.display, self.files[int(i)])
            try:
                data = (self.path / self.files[int(i)]).read_bytes()
            except OSError as exc:
                raise CalibrationError(f"{where}: cannot read ({exc})") from None
            yield where, {self.spec.name: np.frombuffer(data, dtype=np.uint8)}

    def convert(self, where: str, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from PIL import Image

        pre = self.pre
        with _pillow_guard(where):
            with Image.open(io.BytesIO(raw[self.spec.name].tobytes())) as img:
                img = img.convert("L" if pre.color == "grayscale" else "RGB")
                height, width = pre.resize
                if img.size != (width, height):
                    img = img.resize(
                        (width, height), getattr(Image.Resampling, pre.interpolation.upper())
                    )
                x = np.asarray(img, dtype=np.float32)
        x = x[..., None] if x.ndim == 2 else x
        if self._collect:
            self._before.update(x)  # decoded pixels, before scale / mean / std
        if pre.channel_order == "BGR":
            x = x[..., ::-1]
        if pre.layout == "NCHW":
            x = x.transpose(2, 0, 1)
        x = (x[None] * np.float32(pre.scale) - self._mean) / self._std
        return {self.spec.name: to_dtype(where, self.spec.name, x, self._dtype)}
