"""Recipes: quantization choices as values, the recipe space of a target, graph transforms.

``Recipe`` (``recipe.py``) is the frozen value every build, candidate and cache key is made
from; ``ranges.py`` finds calibration ranges that cannot be quantized; ``graph.py``,
``transforms.py`` and ``presets.py`` read and rewrite ONNX graphs (they import onnx: import them
directly, not through this package); ``space.py`` turns a target's ``[recipes]`` section and the
model's shape into starting candidates.
"""

from .recipe import Recipe, RecipeError, TransformSpec

__all__ = ["Recipe", "RecipeError", "TransformSpec"]
