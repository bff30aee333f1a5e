"""The compression steps on tiny seeded Keras models: masks, channel removal, clustering,
distillation and QAT — each checked on the property that defines it."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.compress import channels, cluster, graph, magnitude, qat
from edgeopt.compress.data import load_dataset
from edgeopt.compress.keras_steps import run_steps
from edgeopt.compress.options import CompressOptions, Criterion
from edgeopt.sources import load_source

from . import _models as M


def _source_and_data(labels: bool = True):  # noqa: ANN202
    src = load_source(M.trained_cnn_file())
    return src, load_dataset(M.train_npz(labels), src.inputs, "training")


def test_magnitude_mask_zeroes_exactly_the_smallest() -> None:
    w = np.array([[0.5, -0.1], [0.05, -2.0]], np.float32)
    mask = magnitude.magnitude_mask(w, 0.5)
    assert mask.tolist() == [[1, 0], [0, 1]]
    grown = magnitude.magnitude_mask(w * mask, 0.75, keep_zero=mask)
    assert grown.sum() == 1 and grown[1, 1] == 1  # masks only grow


def test_schedule_rises_to_the_target_and_stays() -> None:
    s = magnitude.Schedule.for_steps(0.8, 100)
    values = [s.sparsity(t) for t in range(101)]
    assert values[0] == 0 and values[-1] == pytest.approx(0.8)
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))
    assert s.sparsity(s.end_step) == pytest.approx(0.8) and s.end_step == 70


def test_masks_hold_sparsity_through_fine_tuning() -> None:
    src, data = _source_and_data()
    opts = CompressOptions(prune=0.6, epochs=2, batch_size=16)
    result = run_steps(graph.as_functional(src.handle, "m"), data, opts, (), lambda m: None)
    pruned = [k for k in graph.kernels(result.model) if k.layer != "conv1"]
    for k in pruned:
        assert magnitude.sparsity_of(k.numpy()) == pytest.approx(0.6, abs=0.5 / k.size + 1e-9)
    first = next(k for k in graph.kernels(result.model) if k.layer == "conv1")
    assert magnitude.sparsity_of(first.numpy()) == 0  # the stem stays dense by default
    assert result.phases[0]["fine_tuned"] and result.phases[0]["steps"] == 12
    assert any("--prune-first" in n for n in result.notes)


def _with_zero_filters():  # noqa: ANN202
    model = M.cnn(seed=3)
    layers = {layer.name: layer for layer in model.layers}
    for name, dead in (("conv2", [1, 4, 6, 9]), ("fc", [0, 3, 5, 8])):
        w = layers[name].get_weights()
        w[0][..., dead] = 0
        w[1][dead] = 0
        layers[name].set_weights(w)
    return model


def test_channel_pruning_of_zero_filters_keeps_outputs_and_cuts_macs() -> None:
    model = _with_zero_filters()
    p = channels.plan(model)
    by_layer = {g.producer: g for g in p.groups}
    assert by_layer["conv2"].consumers == ["pw"] and "probs" in p.skipped
    channels.rank(model, p, 0.25, Criterion.L1)
    p.groups = [g for g in p.groups if g.producer in ("conv2", "fc")]
    smaller = channels.apply(model, p)
    x = M.images(8, seed=9)
    np.testing.assert_allclose(smaller(x), model(x), atol=1e-6)
    assert graph.macs(smaller)["total"] < graph.macs(model)["total"]
    sizes = {layer.name: layer.kernel.shape[-1] for layer in smaller.layers
             if hasattr(layer, "kernel")}
    assert sizes["conv2"] == 12 and sizes["fc"] == 12


def test_channel_pruning_through_flatten_and_batchnorm() -> None:
    import keras

    keras.utils.set_random_seed(1)
    inp = keras.Input(M.HWC)
    x = keras.layers.Conv2D(6, 3, name="c")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(3, name="d")(x)
    model = keras.Model(inp, out)
    w = model.get_layer("c").get_weights()
    w[0][..., [2, 5]] = 0
    w[1][[2, 5]] = 0
    model.get_layer("c").set_weights(w)
    bn = model.get_layer("bn")
    g = bn.get_weights()
    g[1][[2, 5]] = 0  # beta 0 and mean 0: a dead channel stays 0 after BN and ReLU
    g[2][[2, 5]] = 0
    bn.set_weights(g)
    p = channels.plan(model)
    assert p.groups[0].flatten == {"d": 36}
    channels.rank(model, p, 1 / 3, Criterion.L2)
    assert p.groups[0].keep.tolist() == [0, 1, 3, 4]
    x = M.images(4)
    np.testing.assert_allclose(channels.apply(model, p)(x), model(x), atol=1e-5)


def test_residual_channels_are_not_pruned() -> None:
    import keras

    inp = keras.Input(M.HWC)
    a = keras.layers.Conv2D(3, 1, name="a")(inp)
    s = keras.layers.Add(name="add")([a, inp])
    out = keras.layers.Conv2D(2, 1, name="b")(s)
    p = channels.plan(keras.Model(inp, out))
    assert not p.groups and "add" in p.skipped["a"]


def test_kmeans_clusters_to_at_most_k_values_and_keeps_zeros() -> None:
    w = np.random.default_rng(0).normal(size=(3, 3, 4, 8)).astype(np.float32)
    w[w < -0.5] = 0
    c = cluster.cluster_kernel(w, 8, preserve_zeros=True)
    out = c.weights()
    assert np.unique(out).size <= 8
    assert np.array_equal(out == 0, w == 0)
    assert np.abs(out - w).mean() < np.abs(w).mean() / 4


def test_clustering_leaves_at_most_k_values_after_fine_tuning() -> None:
    src, data = _source_and_data()
    opts = CompressOptions(prune=0.5, cluster=4, epochs=1, batch_size=32)
    result = run_steps(graph.as_functional(src.handle, "m"), data, opts, (), lambda m: None)
    for k in graph.kernels(result.model):
        assert cluster.unique_count(k.numpy()) <= 4, k.key
    fc = next(k for k in graph.kernels(result.model) if k.layer == "fc")
    assert magnitude.sparsity_of(fc.numpy()) == pytest.approx(0.5)  # clustering kept sparsity


def test_distillation_loss_decreases_on_unlabelled_data() -> None:
    src, data = _source_and_data(labels=False)
    assert data.labels is None
    opts = CompressOptions(prune=0.7, prune_first=True, distill=True, epochs=4, batch_size=16)
    result = run_steps(graph.as_functional(src.handle, "m"), data, opts, (), lambda m: None)
    kd = result.phases[0]["distill_loss"]
    assert kd[-1] < max(kd) and kd[-1] < kd[len(kd) // 2]


def test_fine_tuning_without_labels_or_distill_is_refused() -> None:
    from edgeopt.compress.options import CompressOptionError

    src, data = _source_and_data(labels=False)
    with pytest.raises(CompressOptionError, match="--distill"):
        run_steps(src.handle, data, CompressOptions(prune=0.5), (), lambda m: None)


def test_batchnorm_folding_is_exact() -> None:
    import keras

    keras.utils.set_random_seed(2)
    inp = keras.Input(M.HWC)
    x = keras.layers.Conv2D(4, 3, name="c")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    out = keras.layers.ReLU()(x)
    model = keras.Model(inp, out)
    bn = model.get_layer("bn")
    bn.set_weights([np.full(4, 1.5, np.float32), np.full(4, 0.2, np.float32),
                    np.full(4, 0.1, np.float32), np.full(4, 2.0, np.float32)])
    folded, names = qat.fold_batchnorm(model)
    assert names == ["bn"] and "bn" not in [layer.name for layer in folded.layers]
    x = M.images(4)
    np.testing.assert_allclose(folded(x), model(x), atol=1e-5)


def test_taylor_scores_rank_dead_filters_last() -> None:
    from edgeopt.compress import train

    model = _with_zero_filters()
    src, data = _source_and_data()
    targets = train.Targets([train.OutputKind.PROBABILITIES], data.labels, None, 0)
    settings = train.TrainSettings(1, 32, 1e-3, 4.0, 0.5, 0, False)
    scores = train.taylor_scores(model, ["conv2"], data.inputs, targets, settings)["conv2"]
    assert scores.shape == (16,) and np.all(scores[[1, 4, 6, 9]] == 0)
