"""Calibration memory does not grow with the number of samples.

ONNX Runtime's ``quantize_static`` used to keep every sample's calibration outputs until the
end (the Entropy / Percentile calibrators: every intermediate activation); the ONNX backend now
feeds it in chunks (``CalibStridedMinMax``). TFLite's representative dataset is a generator the
calibrator consumes one sample at a time. The end-to-end check runs ``edgeopt convert`` (both
formats, entropy calibration) in child processes on 40 and 320 images and compares their peak
RSS; before the fix the difference was ~310 MiB, after it ~5 MiB. The full-size numbers (224x224,
500 vs 5,000 images) come from ``python -m benchmarks.calibration_memory``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from edgeopt_runtime.errors import CalibrationError
from edgeopt_runtime.spec import TensorSpec

from benchmarks import calibration_memory as cm
from edgeopt.backends.onnx import _Reader, calib_chunk

GROWTH_LIMIT_MIB = 100  # 280 more 96x96 samples: ~310 MiB more before the fix


@pytest.mark.parametrize(("count", "chunk"), [
    (1, 1), (7, 7), (16, 16), (17, 1), (48, 16), (500, 10), (5000, 10), (401, 1), (60, 15)])
def test_chunk_is_the_largest_divisor_up_to_16(count: int, chunk: int) -> None:
    assert calib_chunk(count) == chunk
    assert count % calib_chunk(count) == 0


class _Samples:
    """A CalibrationSource stand-in: counts passes; optionally fails at the end of a pass (as
    the real one does when the data changed on disk)."""

    def __init__(self, n: int, fail_at_end: bool = False) -> None:
        self.n, self.fail_at_end, self.passes = n, fail_at_end, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):  # noqa: ANN204
        self.passes += 1
        for i in range(self.n):
            yield {"x": np.full((1, 2), i, np.float64)}
        if self.fail_at_end:
            raise CalibrationError("data changed while in use")


def _reader(samples: _Samples) -> _Reader:
    source = SimpleNamespace(inputs=(TensorSpec("x", (None, 2), "float32"),))
    return _Reader(SimpleNamespace(source=source, calib=samples))  # type: ignore[arg-type]


def _drain(reader: _Reader) -> list[int]:
    got = []
    while (item := reader.get_next()) is not None:
        assert item["x"].dtype == np.float32  # cast to the input's dtype
        got.append(int(item["x"][0, 0]))
    return got


def test_reader_serves_chunks_from_one_pass_as_ort_walks_them() -> None:
    samples = _Samples(12)
    reader = _reader(samples)
    assert len(reader) == 12
    chunk = calib_chunk(12)
    seen = []
    for start in range(0, 12, chunk):  # what quantize_static does with CalibStridedMinMax
        reader.set_range(start_index=start, end_index=start + chunk)
        part = _drain(reader)
        assert part == list(range(start, start + chunk))
        seen += part
    assert seen == list(range(12)) and samples.passes == 1


def test_reader_restarts_for_an_out_of_order_range_and_reads_all_without_ranges() -> None:
    samples = _Samples(10)
    reader = _reader(samples)
    reader.set_range(start_index=6, end_index=8)
    assert _drain(reader) == [6, 7]
    reader.set_range(start_index=2, end_index=4)  # backwards: a new pass, skipping ahead
    assert _drain(reader) == [2, 3] and samples.passes == 2
    assert _drain(_reader(_Samples(5))) == [0, 1, 2, 3, 4]  # no set_range: the whole pass


def test_reader_finishes_the_pass_so_a_changed_data_set_is_caught() -> None:
    reader = _reader(_Samples(4, fail_at_end=True))
    reader.set_range(start_index=0, end_index=2)
    assert _drain(reader) == [0, 1]
    reader.set_range(start_index=2, end_index=4)
    with pytest.raises(CalibrationError, match="changed"):
        _drain(reader)


def test_peak_rss_does_not_grow_with_calibration_samples(tmp_path: Path) -> None:
    size = 96
    model = cm.build_model(tmp_path / "conv.keras", size)
    val = cm.make_images(tmp_path / "val", 4, size, seed=1)
    rows = []
    for n in (40, 320):
        images = cm.make_images(tmp_path / f"calib{n}", n, size, seed=0)
        rows.append({"n": n, **cm.convert_peak(model, images, val, "all-entropy",
                                               tmp_path / "out")})
    assert all(r["exit"] == 0 for r in rows), rows
    growth = cm.growth(rows)["all-entropy"]
    assert growth < GROWTH_LIMIT_MIB, rows
