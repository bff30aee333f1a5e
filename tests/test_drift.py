"""Drift and task metrics against hand-computed values (exact where the math is exact)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from edgeopt_runtime.errors import CalibrationError, InputError
from edgeopt_runtime.spec import QuantParams, dequantize, quantize

from edgeopt.drift import (
    bootstrap_drop_ci,
    compare_outputs,
    macro_prf,
    mean_kl_divergence,
    roc_auc,
    sqnr_db,
    task_metrics,
)


def _one(ref: list, cand: list, name: str = "y") -> dict:
    return compare_outputs([np.asarray(ref, float)], [np.asarray(cand, float)], [name])[0]


def test_error_metrics_hand_computed() -> None:
    # errors 0, 0.5, -2: |e| max 2, mean 2.5/3, sum e^2 = 4.25, sum ref^2 = 14
    r = _one([[1.0, 2.0, 3.0]], [[1.0, 2.5, 1.0]])
    m = r["metrics"]
    assert m["max_abs_error"] == 2.0
    assert m["mean_abs_error"] == pytest.approx(2.5 / 3, rel=1e-15)
    assert m["rmse"] == pytest.approx(math.sqrt(4.25 / 3), rel=1e-15)
    assert m["relative_error"] == pytest.approx(math.sqrt(4.25 / 14), rel=1e-15)
    assert m["sqnr_db"] == pytest.approx(10 * math.log10(14 / 4.25), rel=1e-14)
    cos = (1 + 5 + 3) / (math.sqrt(14) * math.sqrt(1 + 6.25 + 1))
    assert m["cosine"] == pytest.approx(cos, rel=1e-14)
    assert r["shape"] == [1, 3]


def test_sqnr_edge_cases() -> None:
    assert sqnr_db(np.array([3.0, 4.0]), np.array([3.0, 3.0])) == pytest.approx(10 * math.log10(25))
    assert sqnr_db(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == math.inf
    assert math.isnan(sqnr_db(np.zeros(3), np.ones(3)))


def test_sqnr_of_8bit_uniform_quantization_is_about_48db() -> None:
    # Full-scale uniform signal, step 2/256: SQNR = 10 log10((1/3) / (step^2 / 12)) = 48.16 dB.
    x = np.random.default_rng(0).uniform(-1, 127 / 128, 200_000).astype(np.float32)  # int8 range
    p = QuantParams(scale=(2 / 256,), zero_point=(0,))
    xq = dequantize(quantize(x, p, "int8"), p)
    r = compare_outputs([x], [xq], ["x"])[0]["metrics"]
    assert r["sqnr_db"] == pytest.approx(20 * math.log10(256), abs=0.2)
    assert r["max_abs_error"] <= 0.5 * p.scale[0] + 1e-6  # half a step (no clipping in range)


def test_top1_agreement_counts_ties_and_lists_flips() -> None:
    ref = [[1, 2, 3], [3, 2, 1], [1, 1, 0]]
    cand = [[1, 3, 2], [3, 2, 1], [0, 1, 1]]  # row 0 flips; row 2 ties share class 1
    r = _one(ref, cand)
    assert r["metrics"]["top1_agreement"] == pytest.approx(2 / 3)
    assert r["classifier"]["flipped_top1"] == [0]
    assert r["classifier"]["num_flipped"] == 1
    assert r["classifier"]["num_classes"] == 3
    assert "more than 5 classes" in r["skipped"]["top5_agreement"]


def test_top5_agreement() -> None:
    ref = np.zeros((2, 7))
    ref[0, 6] = ref[1, 0] = 1.0  # reference top-1: class 6 and class 0
    cand = np.tile(np.arange(7.0), (2, 1))  # candidate top-5: classes 2..6
    r = compare_outputs([ref], [cand], ["p"])[0]
    assert r["metrics"]["top5_agreement"] == 0.5


def test_kl_probabilities_and_logits_agree() -> None:
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    kl, how = mean_kl_divergence(np.array([[0.5, 0.5]]), np.array([[0.25, 0.75]]))
    assert how == "probabilities" and kl == pytest.approx(expected, rel=1e-12)
    kl, how = mean_kl_divergence(np.array([[0.0, 0.0]]), np.array([[0.0, math.log(3)]]))
    assert how == "softmax(logits)" and kl == pytest.approx(expected, rel=1e-12)
    kl, _ = mean_kl_divergence(np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]]))
    assert kl == pytest.approx(0.0, abs=1e-12)  # 0 log 0 counts as 0


def test_kl_floors_zero_candidate_probability() -> None:
    kl, how = mean_kl_divergence(np.array([[0.5, 0.5]]), np.array([[1.0, 0.0]]))
    assert how == "probabilities"
    assert kl == pytest.approx(0.5 * math.log(0.5) + 0.5 * math.log(0.5 / 1e-7), rel=1e-12)


def test_inapplicable_metrics_are_skipped_with_reason() -> None:
    r = _one([1.0, 2.0], [1.0, 2.5])  # 1-D: no classifier metrics
    assert "sqnr_db" in r["metrics"]
    assert "not classifier-shaped" in r["skipped"]["top1_agreement"]
    assert r["classifier"] is None
    r = _one([[0.0, 0.0]], [[0.1, 0.0]])
    assert r["skipped"]["sqnr_db"] == "reference output is all zeros"
    assert "sqnr_db" not in r["metrics"] and r["metrics"]["max_abs_error"] == 0.1
    r = _one([[1.0, 2.0]], [[np.nan, 2.0]])
    assert "non-finite" in r["skipped"]["all"] and r["metrics"] == {}
    r = compare_outputs([np.array(["a"])], [np.array(["a"])], ["s"])[0]
    assert "non-numeric" in r["skipped"]["all"]


def test_shape_and_count_mismatch_raise() -> None:
    with pytest.raises(InputError, match="'y'.*\\[1, 2\\].*\\[1, 3\\]"):
        _one([[1.0, 2.0]], [[1.0, 2.0, 3.0]])
    with pytest.raises(InputError, match="names"):
        compare_outputs([np.ones(2)], [np.ones(2)], [])


def test_scatter_keeps_worst_point() -> None:
    ref = np.linspace(0, 1, 10_000)
    cand = ref.copy()
    cand[1234] += 5.0
    s = compare_outputs([ref], [cand], ["y"], scatter_points=50)[0]["scatter"]
    assert len(s["reference"]) <= 50
    assert max(c - r for r, c in zip(s["reference"], s["candidate"], strict=True)) == 5.0


def test_macro_precision_recall_f1_hand_computed() -> None:
    y = np.array([0, 0, 1, 1, 2])
    p = np.array([0, 1, 1, 1, 0])
    # class 0: P 1/2 R 1/2 F1 1/2; class 1: P 2/3 R 1 F1 4/5; class 2: P 0 (0/0) R 0 F1 0
    prec, rec, f1 = macro_prf(y, p)
    assert prec == pytest.approx(7 / 18, rel=1e-15)
    assert rec == pytest.approx(1 / 2, rel=1e-15)
    assert f1 == pytest.approx(13 / 30, rel=1e-15)


def test_roc_auc_hand_computed_with_ties() -> None:
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert roc_auc(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.5, 0.9])) == 0.75
    assert math.isnan(roc_auc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_bootstrap_ci_degenerate_and_seeded() -> None:
    y = np.arange(40) % 4
    acc = lambda t, p: float(np.mean(t == p))  # noqa: E731
    assert bootstrap_drop_ci(y, y, y, acc, n_boot=200) == (0.0, 0.0)
    assert bootstrap_drop_ci(y, y, (y + 1) % 4, acc, n_boot=200) == (1.0, 1.0)
    noisy = y.copy()
    noisy[::3] = (noisy[::3] + 1) % 4
    a = bootstrap_drop_ci(y, y, noisy, acc, n_boot=300, seed=1)
    assert a == bootstrap_drop_ci(y, y, noisy, acc, n_boot=300, seed=1)
    assert a != bootstrap_drop_ci(y, y, noisy, acc, n_boot=300, seed=2)
    drop = acc(y, y) - acc(y, noisy)  # 14 of 40 wrong
    assert a[0] < drop < a[1] and a[0] > 0


def test_task_metrics_multiclass_side_by_side() -> None:
    y = np.array([0, 0, 1, 1, 2])
    ref = np.eye(3)[[0, 0, 1, 1, 2]] * 5  # float: all right
    cand = np.eye(3)[[0, 1, 1, 1, 0]] * 5  # quantized: the hand-computed case above
    t = task_metrics([ref], [cand], y, n_boot=100)
    acc = t["metrics"]["accuracy"]
    assert (acc["float"], acc["quantized"]) == (1.0, 0.6)
    assert acc["drop"] == pytest.approx(0.4) and acc["drop_relative"] == pytest.approx(0.4)
    assert t["metrics"]["f1_macro"]["quantized"] == pytest.approx(13 / 30)
    assert t["changed"] == {"fixed": 0, "broken": 2}
    assert "not a binary classifier" in t["skipped"]["roc_auc"]
    assert acc["ci_low"] <= acc["drop"] <= acc["ci_high"]


def test_task_metrics_binary_single_score_and_one_hot_labels() -> None:
    y = np.array([0, 0, 1, 1])
    ref = np.array([[0.1], [0.4], [0.35], [0.8]])  # probabilities -> threshold 0.5
    cand = np.array([[0.1], [0.9], [0.35], [0.8]])
    t = task_metrics([ref], [cand], np.eye(2)[y], n_boot=0)
    m = t["metrics"]
    assert m["accuracy"]["float"] == 0.75 and m["accuracy"]["quantized"] == 0.5
    assert m["roc_auc"]["float"] == 0.75 and m["roc_auc"]["quantized"] == 0.5
    assert "ci_low" not in m["accuracy"]  # n_boot=0 disables intervals


def test_task_metrics_picks_classifier_output_and_skips_otherwise() -> None:
    y = np.array([0, 1, 1])
    emb = np.ones((3, 4, 4))
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    t = task_metrics([emb, logits], [emb, logits], y, n_boot=0)
    assert t["output"] == 1 and t["metrics"]["accuracy"]["drop"] == 0.0
    t = task_metrics([emb], [emb], y, n_boot=0)
    assert "no classifier-shaped output" in t["skipped"]["all"]


def test_task_metrics_bad_labels() -> None:
    logits = np.zeros((3, 2))
    with pytest.raises(CalibrationError, match="2 labels but output 0 has 3 samples"):
        task_metrics([logits], [logits], np.array([0, 1]))
    with pytest.raises(CalibrationError, match="out of range"):
        task_metrics([logits], [logits], np.array([0, 1, 5]))
    with pytest.raises(CalibrationError, match="integer class ids"):
        task_metrics([logits], [logits], np.array([0.5, 1, 0]))


def test_scatter_sample_with_zero_or_one_point() -> None:
    from edgeopt.drift import scatter_sample

    ref = np.array([0.0, 1.0, 2.0], np.float32)
    cand = np.array([0.0, 1.5, 2.0], np.float32)
    assert scatter_sample(ref, cand, 0) == {"reference": [], "candidate": []}
    assert scatter_sample(ref, cand, 1) == {"reference": [1.0], "candidate": [1.5]}
