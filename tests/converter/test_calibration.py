"""Calibration readers: every format, subset selection, hashing, bad inputs, image numerics,
and the streaming memory bound."""

from __future__ import annotations

import os
import pathlib
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from edgeopt_runtime.errors import CalibrationError, EdgeOptError
from edgeopt_runtime.spec import TensorSpec
from PIL import Image

from edgeopt import calibration
from edgeopt.calibration import (
    CalibrationReader,
    Preprocessing,
    open_calibration,
    reader_names,
    register_reader,
)

X = TensorSpec("x", (None, 4, 4, 1), "float32")
IMG = TensorSpec("img", (None, 2, 2, 3), "float32")


def _indexed(n: int, shape: tuple[int, ...] = (4, 4, 1)) -> np.ndarray:
    """Samples whose every value is (index + 1) / 1000, so a sample's identity is readable."""
    return np.stack([np.full(shape, (i + 1) / 1000, np.float32) for i in range(n)])


def _ids(source: calibration.CalibrationSource, name: str = "x") -> list[int]:
    return [round(float(s[name].flat[0]) * 1000) - 1 for s in source]


def _raises(match: str, fn, *args, **kwargs) -> CalibrationError:  # noqa: ANN001
    with pytest.raises(CalibrationError, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)  # one clear line
    return info.value


# ---------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("saver", [np.savez, np.savez_compressed], ids=["stored", "deflated"])
def test_npz_single_input_any_key_with_labels(tmp_path: Path, saver) -> None:  # noqa: ANN001
    data = _indexed(12)
    saver(tmp_path / "c.npz", whatever=data, labels=np.arange(12) * 10)
    src = open_calibration(tmp_path / "c.npz", [X])
    samples = list(src)
    assert src.count == len(samples) == 12 and not src.synthetic and src.format == "npz"
    assert all(s["x"].shape == (1, 4, 4, 1) and s["x"].dtype == np.float32 for s in samples)
    assert all(s["x"].flags.writeable for s in samples)  # consumers may normalize in place
    np.testing.assert_array_equal(np.concatenate([s["x"] for s in samples]), data)
    np.testing.assert_array_equal(src.labels, np.arange(12) * 10)
    assert src.ranges["x"] == (pytest.approx(0.001), pytest.approx(0.012))


def test_npz_multi_input_by_name_with_y_labels(tmp_path: Path) -> None:
    a, b = TensorSpec("a", (1, 3), "float32"), TensorSpec("b:0", (None, 2), "int32")
    av = np.arange(15, dtype=np.float32).reshape(5, 3)
    bv = np.arange(10, dtype=np.int64).reshape(5, 2)  # int64 -> int32: range-checked cast
    np.savez(tmp_path / "m.npz", b=bv, a=av, y=np.arange(5), extra=np.zeros(5))
    src = open_calibration(tmp_path / "m.npz", [a, b])
    samples = list(src)
    assert [s["a"].tolist() for s in samples] == [[row.tolist()] for row in av]
    assert all(s["b:0"].dtype == np.int32 for s in samples)
    assert [s["b:0"].tolist() for s in samples] == [[row.tolist()] for row in bv]
    np.testing.assert_array_equal(src.labels, np.arange(5))
    assert any("ignored arrays extra" in w for w in src.warnings)


@pytest.mark.parametrize("layout", ["batched", "stacked", "single"])
def test_npy_layouts(tmp_path: Path, layout: str) -> None:
    data = _indexed(3)
    stored = {"batched": data, "stacked": data[:, None], "single": data[0]}[layout]
    np.save(tmp_path / "c.npy", stored)
    src = open_calibration(tmp_path / "c.npy", [X])
    assert src.count == (1 if layout == "single" else 3) and src.format == "npy"
    assert _ids(src) == list(range(src.count))
    assert all(s["x"].shape == (1, 4, 4, 1) for s in src)


def test_array_directory_spans_files_and_labels(tmp_path: Path) -> None:
    data = _indexed(10)
    np.savez(tmp_path / "a.npz", x=data[:4], labels=np.arange(4))
    np.savez_compressed(tmp_path / "b.npz", x=data[4:9], labels=np.arange(4, 9))
    np.savez(tmp_path / "c.npz", x=data[9], labels=np.array(9))  # one sample, no batch dim
    (tmp_path / "README.txt").write_text("ignored")
    src = open_calibration(tmp_path, [X], num=6, seed=3)
    ids = _ids(src)
    assert src.format == "array-dir" and len(ids) == 6 and ids == sorted(ids)
    np.testing.assert_array_equal(src.labels, ids)  # labels stay aligned across files


def test_array_directory_of_npy_single_samples(tmp_path: Path) -> None:
    for i, sample in enumerate(_indexed(5)):
        np.save(tmp_path / f"s{i:03d}.npy", sample)
    src = open_calibration(tmp_path, [X])
    assert _ids(src) == [0, 1, 2, 3, 4] and src.labels is None


def test_dir_with_partial_labels_drops_them(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", x=_indexed(2), labels=np.arange(2))
    np.savez(tmp_path / "b.npz", x=_indexed(2))
    src = open_calibration(tmp_path, [X])
    assert src.labels is None and any("only 1 of 2 files hold labels" in w for w in src.warnings)


def test_synthetic_needs_opt_in_and_is_seeded() -> None:
    _raises("pass --calib PATH or --allow-synthetic", open_calibration, None, [X])
    s1 = open_calibration(None, [X], allow_synthetic=True, num=7, seed=1)
    s2 = open_calibration(None, [X], allow_synthetic=True, num=7, seed=1)
    s3 = open_calibration(None, [X], allow_synthetic=True, num=7, seed=2)
    values = np.concatenate([s["x"] for s in s1])
    assert s1.synthetic and s1.source == "synthetic" and s1.count == 7
    assert values.dtype == np.float32 and values.shape == (7, 4, 4, 1)
    assert 0.0 <= values.min() and values.max() < 1.0 and values.std() > 0.2  # uniform [0, 1)
    assert s1.sha256 == s2.sha256 != s3.sha256
    np.testing.assert_array_equal(values, np.concatenate([s["x"] for s in s2]))
    assert s1.to_manifest()["synthetic"] is True


def test_synthetic_integer_and_dynamic_inputs() -> None:
    ids = TensorSpec("ids", (1, 8), "int32")
    src = open_calibration(None, [ids], allow_synthetic=True, num=3)
    v = np.concatenate([s["ids"] for s in src])
    assert v.dtype == np.int32 and 0 <= v.min() and v.max() <= 255
    _raises(
        "needs static shapes",
        open_calibration,
        None,
        [TensorSpec("t", (None, None, 4), "float32")],
        allow_synthetic=True,
    )


# ---------------------------------------------------------------------- subset / determinism


def test_subset_is_seeded_and_sorted(tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", _indexed(50))
    a = open_calibration(tmp_path / "c.npy", [X], num=10, seed=5)
    b = open_calibration(tmp_path / "c.npy", [X], num=10, seed=5)
    c = open_calibration(tmp_path / "c.npy", [X], num=10, seed=6)
    assert _ids(a) == _ids(b) == _ids(a)  # and a second pass repeats the first
    assert _ids(a) != _ids(c) and len(set(_ids(a))) == 10
    expected = sorted(np.random.default_rng(5).choice(50, 10, replace=False).tolist())
    assert _ids(a) == expected
    assert a.sha256 == b.sha256 != c.sha256


def test_num_larger_than_available_and_invalid(tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", _indexed(4))
    src = open_calibration(tmp_path / "c.npy", [X], num=10)  # a cap, not a demand
    assert src.count == 4 and _ids(src) == [0, 1, 2, 3]
    _raises(">= 1, got 0", open_calibration, tmp_path / "c.npy", [X], num=0)


def test_batches(tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", _indexed(10))
    src = open_calibration(tmp_path / "c.npy", [X])
    batches = list(src.batches(4))
    assert [b["x"].shape[0] for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in batches]), _indexed(10))
    with pytest.raises(ValueError):
        list(src.batches(0))


def test_batches_refuse_mixed_dynamic_shapes(tmp_path: Path) -> None:
    seq = TensorSpec("t", (None, None, 2), "float32")
    np.save(tmp_path / "a.npy", np.ones((1, 3, 2), np.float32) * np.arange(3)[:, None])
    np.save(tmp_path / "b.npy", np.ones((1, 5, 2), np.float32) * np.arange(5)[:, None])
    src = open_calibration(tmp_path, [seq])
    assert [s["t"].shape for s in src] == [(1, 3, 2), (1, 5, 2)]
    _raises("differ in shape", list, src.batches(2))


# ---------------------------------------------------------------------------------- hashing


def test_hash_stable_across_containers_paths_and_mtimes(tmp_path: Path) -> None:
    data = _indexed(8)
    np.save(tmp_path / "c.npy", data)
    np.savez_compressed(tmp_path / "c.npz", renamed=data)
    (tmp_path / "d").mkdir()
    np.save(tmp_path / "d" / "part0.npy", data[:3])
    np.save(tmp_path / "d" / "part1.npy", data[3:])
    first = open_calibration(tmp_path / "c.npy", [X]).sha256
    os.utime(tmp_path / "c.npy", (1, 1))
    assert open_calibration(tmp_path / "c.npy", [X]).sha256 == first
    assert open_calibration(tmp_path / "c.npz", [X]).sha256 == first
    assert open_calibration(tmp_path / "d", [X]).sha256 == first
    assert len(first) == 64 and int(first, 16)


def test_hash_sensitive_to_values_dtype_shape_and_preprocessing(tmp_path: Path) -> None:
    data = _indexed(8)
    base = tmp_path / "base.npy"
    np.save(base, data)
    h = open_calibration(base, [X]).sha256
    changed = data.copy()
    changed[5, 2, 1, 0] = np.nextafter(changed[5, 2, 1, 0], 1)  # one ulp in one value
    np.save(tmp_path / "v.npy", changed)
    np.save(tmp_path / "d.npy", data.astype(np.float64))
    seq = TensorSpec("x", (None, None, None), "float32")
    np.save(tmp_path / "s1.npy", data.reshape(8, 2, 8))
    np.save(tmp_path / "s2.npy", data.reshape(8, 8, 2))
    assert open_calibration(tmp_path / "v.npy", [X]).sha256 != h
    assert open_calibration(tmp_path / "d.npy", [X]).sha256 != h
    assert open_calibration(base, [X], num=7).sha256 != h
    assert (
        open_calibration(tmp_path / "s1.npy", [seq]).sha256
        != open_calibration(tmp_path / "s2.npy", [seq]).sha256
    )
    p1 = open_calibration(base, [X], preprocessing=Preprocessing(scale=1.0, apply_to="all")).sha256
    p2 = open_calibration(base, [X], preprocessing=Preprocessing(scale=2.0, apply_to="all")).sha256
    assert len({h, p1, p2}) == 3


def test_data_changed_while_in_use_is_detected(tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", _indexed(4))
    src = open_calibration(tmp_path / "c.npy", [X])
    np.save(tmp_path / "c.npy", _indexed(4) * 2)
    _raises("changed while in use", list, src)


def test_manifest_entry(tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", (_indexed(3) * 1000).astype(np.uint8))
    pre = Preprocessing(scale=0.5)
    m = open_calibration(tmp_path / "c.npy", [X], preprocessing=pre).to_manifest()
    assert set(m) == {"sha256", "count", "source", "synthetic", "format", "preprocessing"}
    assert m["count"] == 3 and m["format"] == "npy" and m["synthetic"] is False
    assert m["source"] == str(tmp_path / "c.npy") and m["preprocessing"] == pre.to_dict()


# ------------------------------------------------------------------------------- bad inputs


def test_shape_and_dtype_mismatch_message(tmp_path: Path) -> None:
    spec = TensorSpec("x", (None, 28, 28, 1), "float32")
    np.savez(tmp_path / "calib.npz", x=np.zeros((100, 28, 28), np.uint8))
    err = _raises(
        r"calib\.npz: input 'x' expects float32\[\?, 28, 28, 1\], got "
        r"uint8\[100, 28, 28\]",
        open_calibration,
        tmp_path / "calib.npz",
        [spec],
    )
    assert "x[..., None]" in str(err) and "preprocessing" in str(err)


def test_channels_first_hint(tmp_path: Path) -> None:
    spec = TensorSpec("x", (None, 8, 8, 3), "float32")
    np.save(tmp_path / "c.npy", np.zeros((2, 3, 8, 8), np.float32))
    _raises(r"transpose\(0, 2, 3, 1\)", open_calibration, tmp_path / "c.npy", [spec])


def test_uint8_needs_preprocessing_then_converts(tmp_path: Path) -> None:
    raw = np.arange(32, dtype=np.uint8).reshape(2, 4, 4, 1) * 8
    np.save(tmp_path / "u8.npy", raw)
    _raises("uint8 data where float32 is expected", open_calibration, tmp_path / "u8.npy", [X])
    pre = Preprocessing(scale=1 / 255, mean=(0.5,), std=(0.25,))
    src = open_calibration(tmp_path / "u8.npy", [X], preprocessing=pre)
    got = np.concatenate([s["x"] for s in src])
    # float32 arithmetic: a few ulps of values of magnitude <= 2.
    np.testing.assert_allclose(got, (raw / 255 - 0.5) / 0.25, rtol=1e-6, atol=1e-6)


def test_integer_overflow_and_float_to_int(tmp_path: Path) -> None:
    ids = TensorSpec("ids", (None, 2), "int8")
    np.save(tmp_path / "big.npy", np.array([[1, 2], [3, 300]], np.int32))
    _raises(
        r"big\.npy: sample 1: input 'ids' holds values in \[3, 300\] outside the int8",
        open_calibration,
        tmp_path / "big.npy",
        [ids],
    )
    np.save(tmp_path / "f.npy", np.zeros((2, 2), np.float32))
    _raises("float32 data cannot feed a int8 input", open_calibration, tmp_path / "f.npy", [ids])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf_named_with_file_and_index(tmp_path: Path, bad: float) -> None:
    data = _indexed(10)
    data[7, 1, 1, 0] = bad
    np.savez_compressed(tmp_path / "calib.npz", x=data)
    _raises(r"calib\.npz: sample 7: input 'x' holds", open_calibration, tmp_path / "calib.npz", [X])
    (tmp_path / "d").mkdir()
    np.save(tmp_path / "d" / "a.npy", data[:5])
    np.save(tmp_path / "d" / "b.npy", data[5:])
    _raises(r"b\.npy: sample 2: input 'x'", open_calibration, tmp_path / "d", [X])


def test_zero_samples(tmp_path: Path) -> None:
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 4, 4, 1), np.float32))
    _raises(r"empty\.npz: no samples", open_calibration, tmp_path / "empty.npz", [X])
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "notes.txt").write_text("x")
    _raises("no calibration samples found", open_calibration, tmp_path / "none", [X])


class _Payload:
    """Unpickling this would create the marker file: proves no pickle is ever loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (pathlib.Path.touch, (self.marker,))


def test_object_and_ragged_arrays_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = np.empty(2, dtype=object)
    evil[0], evil[1] = _Payload(marker), _Payload(marker)
    np.save(tmp_path / "evil.npy", evil, allow_pickle=True)
    np.savez(tmp_path / "evil.npz", x=evil, allow_pickle=True)
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = np.zeros((4, 4, 1)), np.zeros((3, 4, 1))
    np.save(tmp_path / "ragged.npy", ragged, allow_pickle=True)
    for name in ("evil.npy", "evil.npz", "ragged.npy"):
        _raises("object arrays", open_calibration, tmp_path / name, [X])
    np.savez(tmp_path / "labels.npz", x=_indexed(2), labels=evil)
    _raises(r"labels\.npz: cannot read 'labels'", open_calibration, tmp_path / "labels.npz", [X])
    assert not marker.exists()


def test_ragged_directory(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", _indexed(2))
    np.save(tmp_path / "b.npy", _indexed(2, (4, 5, 1)))
    _raises(
        r"b\.npy: input 'x' expects float32\[\?, 4, 4, 1\], got float32\[2, 4, 5, 1\]",
        open_calibration,
        tmp_path,
        [X],
    )


def test_npz_structure_errors(tmp_path: Path) -> None:
    a, b = TensorSpec("a", (None, 2), "float32"), TensorSpec("b", (None, 2), "float32")
    np.savez(tmp_path / "m.npz", a=np.zeros((3, 2), np.float32), c=np.zeros((3, 2), np.float32))
    _raises(
        r"no array for input\(s\) 'b' \(arrays: a, c\)",
        open_calibration,
        tmp_path / "m.npz",
        [a, b],
    )
    np.savez(tmp_path / "n.npz", a=np.zeros((3, 2), np.float32), b=np.ones((2, 2), np.float32))
    _raises("different sample counts", open_calibration, tmp_path / "n.npz", [a, b])
    np.savez(tmp_path / "l.npz", a=np.zeros((3, 2), np.float32), labels=np.arange(4))
    _raises("different sample counts", open_calibration, tmp_path / "l.npz", [a])
    np.save(tmp_path / "one.npy", np.zeros((3, 2), np.float32))
    _raises("use an .npz with one key per input", open_calibration, tmp_path / "one.npy", [a, b])


def test_corrupt_and_truncated_files(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    _raises(r"junk\.npz: not a valid \.npz", open_calibration, tmp_path / "junk.npz", [X])
    np.save(tmp_path / "t.npy", _indexed(10))
    blob = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(blob[: len(blob) // 2])
    _raises(r"t\.npy: the header declares .* truncated", open_calibration, tmp_path / "t.npy", [X])
    (tmp_path / "h.npy").write_bytes(b"\x93NUMPY garbage")
    _raises(r"h\.npy: not a valid \.npy", open_calibration, tmp_path / "h.npy", [X])


def test_path_errors(tmp_path: Path) -> None:
    _raises("no such file or directory", open_calibration, tmp_path / "missing.npz", [X])
    (tmp_path / "c.csv").write_text("1,2")
    _raises("unsupported calibration file", open_calibration, tmp_path / "c.csv", [X])
    (tmp_path / "mixed").mkdir()
    np.save(tmp_path / "mixed" / "a.npy", _indexed(1))
    Image.new("L", (4, 4)).save(tmp_path / "mixed" / "b.png")
    _raises("ambiguous", open_calibration, tmp_path / "mixed", [X])
    src = open_calibration(tmp_path / "mixed", [X], format="array-dir")
    assert src.count == 1
    _raises("unknown calibration format 'csv'", open_calibration, tmp_path, [X], format="csv")
    _raises("no inputs", open_calibration, tmp_path / "mixed", [])


def test_constant_single_sample_is_flagged(tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", np.full((1, 4, 4, 1), 0.5, np.float32))
    src = open_calibration(tmp_path / "c.npy", [X])
    assert src.count == 1 and list(src)
    assert any("only 1 calibration sample" in w for w in src.warnings)
    assert any("constant (0.5)" in w for w in src.warnings)
    np.save(tmp_path / "v.npy", _indexed(3))
    assert open_calibration(tmp_path / "v.npy", [X]).warnings == []


# ---------------------------------------------------------------------------------- images

PIXELS = np.array([[[10, 20, 30], [40, 50, 60]], [[70, 80, 90], [200, 210, 255]]], np.uint8)


def _image_dir(tmp_path: Path, images: dict[str, np.ndarray]) -> Path:
    d = tmp_path / "images"
    d.mkdir(exist_ok=True)
    for name, px in images.items():
        Image.fromarray(px).save(d / name)
    return d


def test_image_numerics_nhwc_by_hand(tmp_path: Path) -> None:
    d = _image_dir(tmp_path, {"a.png": PIXELS})
    pre = Preprocessing(scale=1 / 255, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    (got,) = [s["img"] for s in open_calibration(d, [IMG], preprocessing=pre)]
    # Hand computation, pixel by pixel: ((value / 255) - mean[c]) / std[c].
    expected = np.array(
        [
            [
                [
                    [(10 / 255 - 0.5) / 0.2, (20 / 255 - 0.4) / 0.25, (30 / 255 - 0.3) / 0.5],
                    [(40 / 255 - 0.5) / 0.2, (50 / 255 - 0.4) / 0.25, (60 / 255 - 0.3) / 0.5],
                ],
                [
                    [(70 / 255 - 0.5) / 0.2, (80 / 255 - 0.4) / 0.25, (90 / 255 - 0.3) / 0.5],
                    [(200 / 255 - 0.5) / 0.2, (210 / 255 - 0.4) / 0.25, (255 / 255 - 0.3) / 0.5],
                ],
            ]
        ],
        np.float32,
    )
    assert got.shape == (1, 2, 2, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_image_numerics_nchw_bgr_by_hand(tmp_path: Path) -> None:
    d = _image_dir(tmp_path, {"a.png": PIXELS})
    spec = TensorSpec("img", (1, 3, 2, 2), "float32")
    pre = Preprocessing(
        scale=1.0, mean=(100.0, 0.0, 50.0), std=(2.0, 1.0, 5.0), layout="NCHW", channel_order="BGR"
    )
    src = open_calibration(d, [spec], preprocessing=pre)
    (got,) = [s["img"] for s in src]
    # Channel 0 is blue (mean 100, std 2), 1 green (0, 1), 2 red (50, 5); rows then columns.
    expected = np.array(
        [
            [
                [[(30 - 100) / 2, (60 - 100) / 2], [(90 - 100) / 2, (255 - 100) / 2]],
                [[20, 50], [80, 210]],
                [[(10 - 50) / 5, (40 - 50) / 5], [(70 - 50) / 5, (200 - 50) / 5]],
            ]
        ],
        np.float32,
    )
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert src.to_manifest()["preprocessing"]["resize"] == [2, 2]  # resolved from the model


def test_image_resize_grayscale_and_uint8_input(tmp_path: Path) -> None:
    gray = np.array([[0, 100], [200, 255]], np.uint8)
    d = _image_dir(tmp_path, {"g.png": gray})
    spec = TensorSpec("g", (None, 4, 4, 1), "uint8")
    pre = Preprocessing(scale=1.0, color="grayscale", interpolation="nearest")
    (got,) = [s["g"] for s in open_calibration(d, [spec], preprocessing=pre)]
    expected = np.array(
        [[0, 0, 100, 100], [0, 0, 100, 100], [200, 200, 255, 255], [200, 200, 255, 255]], np.uint8
    )
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got[0, :, :, 0], expected)


def test_image_defaults_from_model_and_jpeg(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    d = tmp_path / "jpgs"
    d.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(d / f"{i}.jpg")
    src = open_calibration(d, [TensorSpec("x", (None, 8, 8, 1), "float32")])
    values = np.concatenate([s["x"] for s in src])
    assert src.format == "image-dir" and values.shape == (3, 8, 8, 1)
    assert 0 <= values.min() and values.max() <= 1 and values.std() > 0.1
    assert src.preprocessing["color"] == "grayscale"
    assert any("no image preprocessing given" in w for w in src.warnings)
    # Hash covers file bytes + preprocessing: a different preprocessing changes it.
    other = open_calibration(
        d,
        [TensorSpec("x", (None, 8, 8, 1), "float32")],
        preprocessing=Preprocessing(color="grayscale", scale=2 / 255),
    )
    assert other.sha256 != src.sha256


def test_image_shape_checked_before_decoding(tmp_path: Path) -> None:
    d = tmp_path / "bad"
    d.mkdir()
    (d / "broken.png").write_bytes(b"\x89PNG not really")
    # The channel mismatch is reported (from preprocessing alone) before any image is decoded.
    _raises(
        r"bad: input 'x' expects float32\[\?, 4, 4, 1\]: preprocessing gives "
        r"float32\[1, 4, 4, 3\]",
        open_calibration,
        d,
        [TensorSpec("x", (None, 4, 4, 1), "float32")],
        preprocessing=Preprocessing(),
    )
    _raises(
        r"broken\.png: cannot decode image",
        open_calibration,
        d,
        [TensorSpec("x", (None, 4, 4, 1), "float32")],
    )
    _raises(
        "set preprocessing resize",
        open_calibration,
        d,
        [TensorSpec("x", (None, None, None, 3), "float32")],
    )
    _raises("feeds one input", open_calibration, d, [X, IMG])


def test_decompression_bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _image_dir(tmp_path, {"big.png": np.zeros((30, 30), np.uint8)})
    monkeypatch.setattr(calibration.readers.images, "MAX_IMAGE_PIXELS", 100)
    before = Image.MAX_IMAGE_PIXELS
    for limit in (500, 100):  # 900 px: over the limit (warning), then over twice it (error)
        monkeypatch.setattr(calibration.readers.images, "MAX_IMAGE_PIXELS", limit)
        _raises(
            r"big\.png: image too large",
            open_calibration,
            d,
            [TensorSpec("x", (None, 30, 30, 1), "float32")],
        )
    assert Image.MAX_IMAGE_PIXELS == before  # the global limit is restored


# ------------------------------------------------------------------------------ preprocessing


def test_preprocessing_round_trip_and_validation() -> None:
    pre = Preprocessing(resize=[8, 6], mean=[1, 2, 3], std=[4, 5, 6], layout="NCHW")
    assert pre.resize == (8, 6) and pre.mean == (1.0, 2.0, 3.0)
    assert Preprocessing.from_dict(pre.to_dict()) == pre
    _raises("unknown keys colour", Preprocessing.from_dict, {"colour": "rgb"})
    _raises("layout must be one of NHWC, NCHW", Preprocessing, layout="HWC")
    _raises("std must be non-zero", Preprocessing, std=(1.0, 0.0, 1.0))
    _raises("scale must be finite", Preprocessing, scale=float("nan"))


def test_per_channel_mean_needs_matching_channels(tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", _indexed(2))
    _raises(
        "mean has 3 values but input 'x'",
        open_calibration,
        tmp_path / "c.npy",
        [X],
        preprocessing=Preprocessing(mean=(0.1, 0.2, 0.3), apply_to="all"),
    )


def test_preprocessing_refuses_float_arrays_unless_asked(tmp_path: Path) -> None:
    np.save(tmp_path / "f.npy", _indexed(3))
    err = _raises("is already float32, so it is taken as model input", open_calibration,
                  tmp_path / "f.npy", [X], preprocessing=Preprocessing(scale=1 / 255))
    assert "expects" not in str(err) and "apply_to=all" in str(err)
    src = open_calibration(tmp_path / "f.npy", [X],
                           preprocessing=Preprocessing(scale=2.0, apply_to="all"))
    assert [round(float(s["x"].flat[0]) * 1000) for s in src] == [2, 4, 6]
    stats = src.stats_dict()["x"]
    assert stats["before_preprocessing"]["max"] == pytest.approx(0.003)
    assert stats["model_input"]["max"] == pytest.approx(0.006)
    assert any("already-float input 'x'" in w for w in src.warnings)
    plain = open_calibration(tmp_path / "f.npy", [X])
    assert plain.stats_dict()["x"]["before_preprocessing"] is None


# ---------------------------------------------------------------------------------- registry


def test_registry_rejects_duplicates() -> None:
    assert {"npz", "npy", "image-dir", "array-dir"} <= set(reader_names())

    class Dup(CalibrationReader):
        name = "npz"

    with pytest.raises(ValueError, match="'npz' is already registered"):
        register_reader(Dup)


def test_errors_are_edgeopt_errors() -> None:
    assert issubclass(CalibrationError, EdgeOptError)


# ---------------------------------------------------------------------------- memory bound


def _peak_bytes(fn) -> int:  # noqa: ANN001
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def _consume(path: Path, spec: TensorSpec) -> None:
    src = open_calibration(path, [spec])
    for _ in src:
        pass


@pytest.mark.parametrize("kind", ["npy", "npz-stored", "npz-deflated"])
def test_peak_memory_independent_of_sample_count_arrays(tmp_path: Path, kind: str) -> None:
    spec = TensorSpec("x", (None, 32, 32, 1), "float32")  # 4 KiB per sample
    peaks = {}
    for n in (200, 2000):
        data = np.random.default_rng(n).random((n, 32, 32, 1), dtype=np.float32)
        path = tmp_path / f"{n}.{kind[:3]}"
        if kind == "npy":
            np.save(path, data)
        elif kind == "npz-stored":
            np.savez(path, x=data)
        else:
            np.savez_compressed(path, x=data)
        del data
        peaks[n] = _peak_bytes(lambda p=path: _consume(p, spec))
    total = 2000 * 32 * 32 * 4  # 8 MB if all samples were held at once
    assert peaks[2000] < total / 20, peaks
    # 10x the samples may add the index array (8 B/sample) but no sample data.
    assert peaks[2000] - peaks[200] < 64 * 1024, peaks


def test_peak_memory_independent_of_sample_count_images(tmp_path: Path) -> None:
    spec = TensorSpec("x", (None, 48, 48, 3), "float32")  # 27 KiB per decoded sample
    rng = np.random.default_rng(0)
    tile = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    peaks = {}
    for n in (3, 100, 1000):  # the first run loads Pillow's plugins: not counted
        d = tmp_path / str(n)
        d.mkdir()
        for i in range(n):
            Image.fromarray(np.roll(tile, i, axis=1)).save(d / f"{i:05d}.png", compress_level=1)
        peaks[n] = _peak_bytes(lambda d=d: _consume(d, spec))
    total = 1000 * 48 * 48 * 3 * 4  # 27 MB if all decoded samples were held
    assert peaks[1000] < total / 20, peaks
    # The file listing grows with the count (~70 B a name), the sample data (27 KiB) must not.
    assert peaks[1000] - peaks[100] < 150 * 1024, peaks


# ---------------------------------------------------------------------- shipped example data

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "calibration_data" / "digits"
DIGIT_INPUT = TensorSpec("input", (None, 16, 16, 1), "float32")


def test_shipped_digits_sets() -> None:
    calib = open_calibration(DIGITS / "calib.npz", [DIGIT_INPUT])
    val = open_calibration(DIGITS / "val.npz", [DIGIT_INPUT])
    assert (calib.count, val.count) == (200, 300)
    assert calib.warnings == [] and calib.ranges["input"] == (0.0, 1.0)
    for src in (calib, val):
        assert src.labels is not None and set(src.labels.tolist()) == set(range(10))
    # The PNGs are the first 32 calibration samples: same values bit for bit.
    images = open_calibration(DIGITS / "images", [DIGIT_INPUT])
    assert images.count == 32
    first = [s["input"] for _, s in zip(range(32), calib, strict=False)]
    np.testing.assert_array_equal(
        np.concatenate([s["input"] for s in images]), np.concatenate(first)
    )


def test_shipped_model_is_small_and_accurate() -> None:
    keras = pytest.importorskip("keras")
    val = open_calibration(DIGITS / "val.npz", [DIGIT_INPUT])
    x = np.concatenate([s["input"] for s in val])
    probs = {}
    for name in ("digits_cnn.keras", "digits_cnn.h5"):
        path = ROOT / "examples" / name
        assert path.stat().st_size < 200 * 1024
        model = keras.saving.load_model(path, compile=False)
        assert model.inputs[0].name == "input" and tuple(model.inputs[0].shape) == (None, 16, 16, 1)
        kinds = {type(layer).__name__ for layer in model.layers}
        assert kinds <= {"InputLayer", "Conv2D", "MaxPooling2D", "GlobalAveragePooling2D", "Dense"}
        probs[name] = model(x, training=False).numpy()
    assert (probs["digits_cnn.keras"].argmax(1) == val.labels).mean() > 0.9
    np.testing.assert_allclose(probs["digits_cnn.keras"], probs["digits_cnn.h5"], atol=1e-6)
