"""Accelerators: where a target's model runs, and what edgeopt checks and runs for each.

``registry``   one ``Accelerator`` entry per TFLite delegate / ONNX execution provider
               (pre-flight analysis, post-build step, gating, runtime delegate, compiled-model
               choice, host notes); ``for_target(profile, fmt)`` picks a target's entry
``host``       whether this host can run it (the one place that asks ``edgeopt_runtime``)
``preflight``  what of a pre-flight result goes into ``report.json``
``edgetpu``    the Edge TPU's post-build step (``edgetpu_compiler``)
``gates``      ``--strict``: does each artifact run wholly on its accelerator
"""

from __future__ import annotations

from .gates import StrictError, accelerator_gates, artifact_gate, strict_message
from .postbuild import PostBuild, PostBuildOutcome
from .preflight import compact_preflight, inspect_command
from .registry import (
    Accelerator,
    for_target,
    get,
    host_cpu,
    is_compiled_model,
    post_build_steps,
    register,
    registered,
    runs_on_host_cpu,
)

__all__ = [
    "Accelerator",
    "PostBuild",
    "PostBuildOutcome",
    "StrictError",
    "accelerator_gates",
    "artifact_gate",
    "compact_preflight",
    "for_target",
    "get",
    "host_cpu",
    "inspect_command",
    "is_compiled_model",
    "post_build_steps",
    "register",
    "registered",
    "runs_on_host_cpu",
    "strict_message",
]
