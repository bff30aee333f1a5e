"""How TFLite splits a graph between a delegate and the CPU.

A port of ``PartitionGraphIntoIndependentNodeSubsets`` (tensorflow/lite/graph_info.cc, greedy
mode, which delegates use): the graph is walked in "epochs"; each epoch collects every op of one
kind (delegated or not) whose inputs are ready, so supported ops on a parallel branch join the
earlier delegated subset even when they come after a CPU op in execution order. Delegates then
keep some of the delegated subsets: the Edge TPU compiler (without ``-a``) the first one, the GPU
delegate the largest ``max_delegated_partitions`` (default 1), XNNPACK all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .tflite_graph import OpInfo


@dataclass(frozen=True)
class Subset:
    """A run of ops of one kind that execute together (one delegate kernel, or CPU ops)."""

    delegated: bool
    ops: tuple[int, ...]  # op indices in the order the partitioner took them


def partition(ops: Sequence[OpInfo], supported: Sequence[bool]) -> list[Subset]:
    """Split ``ops`` into alternating delegated / CPU subsets the way TFLite does.

    Args:
        ops: the graph's ops in execution order.
        supported: per op, whether the delegate can take it on its own merits.

    Returns:
        The subsets in the order TFLite builds them.
    """
    produced = {t.index for op in ops for t in op.outputs}
    ready: set[int] = set()  # produced tensors whose producer has been placed
    placed = [False] * len(ops)
    subsets: list[Subset] = []
    while not all(placed):
        kind: bool | None = None
        members: list[int] = []
        progress = True
        while progress:
            progress = False
            for op in ops:
                i = op.index
                if placed[i]:
                    continue
                if any(t.index in produced and t.index not in ready for t in op.inputs):
                    continue
                if kind is None:
                    kind = supported[i]  # the first ready op decides the epoch's kind
                if supported[i] != kind:
                    continue
                placed[i] = True
                members.append(i)
                ready.update(t.index for t in op.outputs)
                progress = True
        if not members:  # a cycle or a dangling input: place the rest in order, as the CPU would
            rest = [op.index for op in ops if not placed[op.index]]
            for i in rest:
                placed[i] = True
            subsets.append(Subset(delegated=False, ops=tuple(rest)))
            break
        subsets.append(Subset(delegated=bool(kind), ops=tuple(members)))
    return subsets


def ancestors(ops: Sequence[OpInfo]) -> list[set[int]]:
    """For each op, the set of op indices it depends on (transitively)."""
    producer = {t.index: op.index for op in ops for t in op.outputs}
    result: list[set[int]] = []
    for op in ops:  # execution order is a topological order
        deps: set[int] = set()
        for t in op.inputs:
            p = producer.get(t.index)
            if p is not None and p < op.index:
                deps.add(p)
                deps |= result[p]
        result.append(deps)
    return result
