"""Hostile calibration data and option values: each is refused in one line, in seconds, from
what headers declare, before anything large is read (files from ``scripts/make_hostile_inputs``).
"""

from __future__ import annotations

import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from edgeopt_runtime.errors import CalibrationError
from edgeopt_runtime.spec import TensorSpec

from edgeopt.calibration import Preprocessing, open_calibration
from edgeopt.cli import main
from edgeopt.limits import MAX_ABS_VALUE, CalibrationLimits, OptionError, check_numbers
from scripts import make_hostile_inputs as H
from tests._console import problem_lines

from . import _models as M

IMAGE = TensorSpec("image", (None, 8, 8, 3), "float32")


def _refused(match: str, path: Path, **kwargs: object) -> str:
    started = time.monotonic()
    with pytest.raises(CalibrationError, match=match) as info:
        open_calibration(path, [IMAGE], **kwargs)  # type: ignore[arg-type]
    assert time.monotonic() - started < 5, "refused, but not from the headers alone"
    text = str(info.value)
    assert "\n" not in text and text.startswith(str(path)), text
    return text


# ----------------------------------------------------------------------------- the generator


def test_crc_of_zeros_matches_zlib() -> None:
    for n in (0, 1, 7, 1000, 1 << 20, (3 << 20) + 5):
        assert H.crc32_zeros(zlib.crc32(b"head"), n) == zlib.crc32(bytes(n), zlib.crc32(b"head"))


def test_the_bomb_is_a_valid_npz(tmp_path: Path) -> None:
    path = H.npz_bomb(tmp_path / "small.npz", declared=3 << 20)
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None  # CRC and sizes right: a real file, not a broken one
    data = np.load(path)["image"]
    assert data.shape == ((3 << 20) // 768, 8, 8, 3) and not data.any()


# ----------------------------------------------------------------------------- sizes


def test_decompression_bomb_is_refused_in_seconds(tmp_path: Path) -> None:
    """The review's case: ~37 MB of .npz holding 8 GiB of zeros (10 min at 4 GB RSS before)."""
    bomb = H.npz_bomb(tmp_path / "bomb.npz")
    assert bomb.stat().st_size < 40e6
    for num in (None, 100):  # a subset does not help: deflate streams only forwards
        text = _refused("decompression bomb", bomb, num=num)
        assert "8.0 GiB" in text and "228x" in text


def test_npy_header_claiming_a_huge_shape_is_one_line(tmp_path: Path) -> None:
    text = _refused("declares float32.1099511627776, 8, 8, 3. .768.0 TiB. but only 16 bytes",
                    H.npy_huge_header(tmp_path / "huge.npy"))
    assert "truncated" in text


def test_npz_member_claiming_a_huge_shape_is_one_line(tmp_path: Path) -> None:
    _refused(r"array 'image': the header declares .*\(768.0 TiB\)", H.npz_huge_header(
        tmp_path / "huge.npz"))


def test_more_samples_than_a_run_reads_needs_num_calib(tmp_path: Path) -> None:
    path = tmp_path / "many.npy"
    np.save(path, np.zeros((11, 8, 8, 3), np.float32) + 0.5)
    limits = CalibrationLimits(max_samples=10)
    _refused(r"holds 11 samples, more than the 10 read per run: pass --num-calib N", path,
             limits=limits)
    assert open_calibration(path, [IMAGE], num=5, limits=limits).count == 5
    with pytest.raises(CalibrationError, match="at most 10"):
        open_calibration(path, [IMAGE], num=11, limits=limits)


def test_one_sample_over_the_memory_budget(tmp_path: Path) -> None:
    big = TensorSpec("image", (None, 64, 64, 3), "float32")
    np.save(tmp_path / "big.npy", np.zeros((2, 64, 64, 3), np.float32))
    with pytest.raises(CalibrationError, match=r"one sample is 48.0 KiB .* over the limit"):
        open_calibration(tmp_path / "big.npy", [big],
                         limits=CalibrationLimits(max_sample_bytes=1 << 15))


def test_arrays_read_whole_are_bounded(tmp_path: Path) -> None:
    x = np.zeros((40, 8, 8, 3), np.float32) + 0.5
    np.savez(tmp_path / "labels.npz", image=x, labels=np.arange(40 * 100).reshape(40, 100))
    limits = CalibrationLimits(max_whole_bytes=1000)
    _refused(r"array 'labels' declares 31.2 KiB, and as labels it would be read whole",
             tmp_path / "labels.npz", limits=limits)
    np.savez(tmp_path / "fortran.npz", image=np.asfortranarray(x))
    _refused(r"array 'image' declares 30.0 KiB, and being Fortran-ordered", tmp_path /
             "fortran.npz", limits=limits)


def test_limits_from_the_environment() -> None:
    assert CalibrationLimits.from_env({"EDGEOPT_CALIB_MAX_SAMPLES": "7"}).max_samples == 7
    for bad in ("many", "0", "-3", "1.5"):
        with pytest.raises(CalibrationError, match=f"EDGEOPT_CALIB_MAX_SAMPLES='{bad}'"):
            CalibrationLimits.from_env({"EDGEOPT_CALIB_MAX_SAMPLES": bad})


def test_resize_beyond_the_pixel_limit() -> None:
    with pytest.raises(CalibrationError, match="resize 100000x100000 is over the limit"):
        Preprocessing(resize=(100_000, 100_000))


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize("value", [3e38, -3.4028235e38, 1e31])
def test_values_beyond_the_converters_range_name_input_and_sample(
    tmp_path: Path, value: float
) -> None:
    text = _refused(r"sample 2: input 'image' holds .* at \[0, 0, 1, 2\], beyond the \+-1e\+30",
                    H.huge_values(tmp_path / "v.npz", value))
    assert f"{np.float32(value):.3g}" in text


def test_values_below_the_limit_are_kept(tmp_path: Path) -> None:
    src = open_calibration(H.huge_values(tmp_path / "v.npz", MAX_ABS_VALUE / 2), [IMAGE])
    assert src.ranges["image"][1] == pytest.approx(MAX_ABS_VALUE / 2, rel=1e-6)


def test_preprocessing_that_makes_values_huge_is_caught_after_it(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.full((2, 8, 8, 3), 200, np.uint8))
    with pytest.raises(CalibrationError, match="sample 0: input 'image' holds 2e\\+35"):
        open_calibration(tmp_path / "x.npy", [IMAGE], preprocessing=Preprocessing(scale=1e33))


def test_huge_values_end_to_end_exit_2_instead_of_a_crash(tmp_path: Path) -> None:
    """Before: TF's mlir_quantize died with SIGSEGV (exit 139, no message) on these values."""
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "convert", str(M.keras_file()), "--target", "arm-cpu", "--calib",
        str(H.huge_values(tmp_path / "v.npz")), "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 2
    lines = problem_lines(result.stderr)
    assert len(lines) == 1 and "beyond the +-1e+30" in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.npz"]


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize(("args", "bad"), [
    (["--latency-runs", "100001"], "--latency-runs"),
    (["--latency-runs", "0"], "--latency-runs"),
    (["--seed", "-1"], "--seed"),
    (["--seed", str(2**32)], "--seed"),
    (["--num-calib", "100001"], "--num-calib"),
    (["--num-calib", "1e9"], "--num-calib"),
])
def test_numeric_options_are_bounded(tmp_path: Path, args: list[str], bad: str) -> None:
    result = CliRunner().invoke(main, ["convert", "m.keras", "--target", "arm-cpu",
                                       "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2 and f"'{bad}'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"latency_runs": 10**9}, "latency_runs must be an integer from 1 to 100000"),
    ({"latency_runs": 2.5}, "latency_runs must be an integer"),
    ({"latency_runs": True}, "latency_runs must be an integer"),
    ({"seed": -1}, "seed must be an integer from 0 to 4294967295, got -1"),
    ({"num_calib": 0}, "num_calib must be an integer from 1 to"),
])
def test_numeric_api_arguments_are_bounded(kwargs: dict[str, object], match: str) -> None:
    values = {"latency_runs": 50, "num_calib": None, "seed": 0, **kwargs}
    with pytest.raises(OptionError, match=match):
        check_numbers(**values)
    import edgeopt.convert as c

    with pytest.raises(OptionError, match=match):  # the API refuses before touching anything
        c.convert("never-read.keras", ["arm-cpu"], None, **kwargs)  # type: ignore[arg-type]
