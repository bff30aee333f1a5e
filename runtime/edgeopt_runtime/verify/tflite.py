"""``check_tflite``: is a TFLite flatbuffer safe to hand to the interpreter?

A corrupt ``.tflite`` can kill the process that loads it. ai-edge-litert 2.x runs the flatbuffer
verifier (older ``tflite_runtime`` / ``tf.lite`` fallbacks may not), but nothing checks what the
flatbuffer *means*: tensor indices, operator arity, omitted inputs, tensor types, quantization
parameters. Kernels and XNNPACK trust those and segfault or abort (``tests/runtime/test_fuzz.py``,
``tests/stress/`` and ``scripts/make_crash_cases.py`` found each rule). The whole flatbuffer is
walked with bounds-checked reads (``flatbuffer.py``: ``struct.unpack_from`` on a memoryview, no
copies; ~3 ms for a 14 MB MobileNetV2): model level here, tensors in ``tensors.py``, operators in
``operators.py`` against the kernel facts of ``op_rules.py``.
"""

from __future__ import annotations

from ..errors import ModelLoadError
from .flatbuffer import I8, I32, U32, U64, Corrupt, Reader, Table
from .op_rules import CUSTOM, WHILE
from .operators import check_op_options, check_op_tensors, check_operator, name_ops, while_subgraphs
from .schema_tables import BUILTIN_OPS
from .tensors import ACTIVATION, CONSTANT, TENSOR_TYPES, ModelFacts, TensorFacts, check_tensor

TFLITE_IDENTIFIER = b"TFL3"
TFLITE_SCHEMA_VERSION = 3
MAX_BUILTIN_CODE = max(BUILTIN_OPS)


def check_tflite(data: bytes | bytearray | memoryview, source: str) -> None:
    """Check that a TFLite model is safe to hand to the interpreter.

    Args:
        data: the whole ``.tflite`` file (not copied).
        source: file name used in the error message.

    Raises:
        ModelLoadError: one line naming the file and the first unsafe structure found.
    """
    buf = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
    try:
        _check_model(Reader(buf))
    except Corrupt as exc:
        raise ModelLoadError(f"{source}: corrupt TFLite model: {name_ops(str(exc))}") from None
    except Exception as exc:  # noqa: BLE001 - any unanticipated failure still fails cleanly
        raise ModelLoadError(
            f"{source}: corrupt TFLite model (check failed with {type(exc).__name__}: {exc})"
        ) from None


def _check_model(r: Reader) -> None:
    if r.end < 8:
        raise Corrupt(f"file is only {r.end} bytes, too short for a flatbuffer")
    ident = bytes(r.buf[4:8])
    if ident != TFLITE_IDENTIFIER:
        raise Corrupt(f"file identifier is {ident!r}, expected {TFLITE_IDENTIFIER!r}")
    root = Table(r, r.deref(0, "root table offset"), "model table")
    version = root.scalar(0, U32)
    if version != TFLITE_SCHEMA_VERSION:
        raise Corrupt(f"schema version {version}, expected {TFLITE_SCHEMA_VERSION}")
    m = ModelFacts(r, root)
    m.buffers = [_check_buffer(r, t) for t in root.tables(4, "buffer")]
    m.opcodes = [_check_opcode(t) for t in root.tables(1, "operator code")]
    subgraphs = root.tables(2, "subgraph")
    if not subgraphs:
        raise Corrupt("model has no subgraphs")
    m.n_subgraphs = len(subgraphs)
    m.external_ids = _check_external_buffers(root)
    counts = [_check_subgraph(m, i, sg) for i, sg in enumerate(subgraphs)]
    root.string(3, "model description")
    _check_metadata(m)
    for sg in _check_signatures(m, counts):
        _check_io_types(m, sg)
    _check_call_graph(m.calls)
    _check_loops(m)


def _check_buffer(r: Reader, t: Table) -> tuple[int, int]:
    start, n = t.vector(0, 1, t.what)
    offset, size = t.scalar(1, U64), t.scalar(2, U64)
    if offset > 1:  # models over 2 GB keep buffers after the flatbuffer, addressed from byte 0
        if n:
            raise Corrupt(f"{t.what} has both inline data and an external offset")
        if offset + size > r.end:
            raise Corrupt(
                f"{t.what} data at bytes {offset}..{offset + size} lies past the end of the "
                f"{r.end}-byte file"
            )
        return offset, size
    return start, n


def _check_opcode(t: Table) -> int:
    deprecated = t.scalar(0, I8)
    builtin = t.scalar(3, I32)
    code = max(deprecated, builtin)  # how LiteRT's GetBuiltinCode resolves the two fields
    if not 0 <= code <= MAX_BUILTIN_CODE:
        raise Corrupt(f"{t.what} has unknown builtin code {code}")
    custom = t.string(1, f"{t.what} custom code")
    if code == CUSTOM and not custom:
        raise Corrupt(f"{t.what} is a custom op without a custom code")
    if t.scalar(2, I32, 1) < 1:
        raise Corrupt(f"{t.what} has version {t.scalar(2, I32, 1)}, expected >= 1")
    return code


def _check_metadata(m: ModelFacts) -> None:
    nbuf = len(m.buffers)
    for i in m.root.ints(5, "metadata buffer list", "I"):
        if i >= nbuf:
            raise Corrupt(f"metadata buffer index {i} out of range ({nbuf} buffers)")
    for t in m.root.tables(6, "metadata entry"):
        t.string(0, f"{t.what} name")
        if t.scalar(1, U32) >= nbuf:
            raise Corrupt(f"{t.what} names buffer {t.scalar(1, U32)} of {nbuf}")


def _check_signatures(m: ModelFacts, tensor_counts: list[int]) -> set[int]:
    """Check signature defs; return the subgraphs they expose."""
    exposed = set()
    for sig in m.root.tables(7, "signature"):
        sg = sig.scalar(4, U32)
        if sg >= m.n_subgraphs:
            raise Corrupt(f"{sig.what} names subgraph {sg} of {m.n_subgraphs}")
        sig.string(2, f"{sig.what} key")
        for fid, kind in ((0, "input"), (1, "output")):
            for tm in sig.tables(fid, f"{sig.what} {kind}"):
                tm.string(0, f"{tm.what} name")
                idx = tm.scalar(1, U32)
                if idx >= tensor_counts[sg]:
                    raise Corrupt(
                        f"{tm.what} names tensor {idx}; subgraph {sg} has {tensor_counts[sg]}"
                    )
        exposed.add(sg)
    return exposed


# Tensor types the LiteRT Python API can hand over as numpy arrays.
_NUMPY_TYPES = frozenset({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 15, 16})


def _check_io_types(m: ModelFacts, sg: int) -> None:
    """Inputs/outputs a caller feeds or reads must have a numpy type (else the wrapper raises)."""
    for kind, tensors in zip(("input", "output"), m.io[sg], strict=True):
        for k, t in enumerate(tensors):
            if t.ttype not in _NUMPY_TYPES:
                raise Corrupt(
                    f"subgraph {sg} {kind} {k} has type {TENSOR_TYPES[t.ttype][0]}, which "
                    "cannot be passed to or from the interpreter as an array"
                )


def _check_external_buffers(root: Table) -> set[int]:
    """Check weights kept in external files; return the ids tensors may refer to."""
    groups = root.tables(8, "external buffer group")
    for g in groups:
        g.string(0, f"{g.what} name")
    ids = set()
    for t in root.tables(9, "external buffer"):
        if t.scalar(1, U32) >= len(groups):
            raise Corrupt(f"{t.what} names group {t.scalar(1, U32)} of {len(groups)}")
        t.scalar(2, U64), t.scalar(3, U64)
        t.string(4, f"{t.what} packing")
        ids.add(t.scalar(0, U32))
    return ids


def _check_call_graph(calls: dict[int, set[int]]) -> None:
    """Control-flow ops must not call their own subgraph, directly or not (infinite recursion)."""
    state: dict[int, int] = {}  # 1: on the current path, 2: done

    def visit(sg: int, path: list[int]) -> None:
        state[sg] = 1
        for callee in sorted(calls.get(sg, ())):
            if state.get(callee) == 1:
                cycle = " -> ".join(str(s) for s in [*path, sg, callee])
                raise Corrupt(f"control-flow ops call subgraphs in a cycle ({cycle})")
            if callee not in state:
                visit(callee, [*path, sg])
        state[sg] = 2

    for sg in sorted(calls):
        if sg not in state:
            visit(sg, [])


def _check_subgraph(m: ModelFacts, index: int, sg: Table) -> int:
    """Check one subgraph; return its tensor count."""
    where = f"subgraph {index}"
    tensors = sg.tables(0, f"{where} tensor")
    n = len(tensors)
    infos = [check_tensor(m, t) for t in tensors]
    const = [t.kind == CONSTANT for t in infos]
    ios = {}
    for fid, kind in ((1, "input"), (2, "output")):
        ios[kind] = sg.ints(fid, f"{where} {kind} list")
        for k, idx in enumerate(ios[kind]):
            if not 0 <= idx < n:
                raise Corrupt(f"{where} {kind} {k} is tensor {idx}; the subgraph has {n}")
            if kind == "input" and const[idx]:
                raise Corrupt(f"{where} input {k} (tensor {idx}) is a constant")
    sg.string(4, f"{where} name")
    m.io.append(([infos[i] for i in ios["input"]], [infos[i] for i in ios["output"]]))
    if index == 0:  # the entry point; signature subgraphs are checked once signatures are read
        _check_io_types(m, 0)
    _check_operators(m, index, sg, infos, ios["input"], ios["output"])
    return n


def _check_operators(
    m: ModelFacts,
    index: int,
    sg: Table,
    infos: list[TensorFacts],
    inputs: tuple[int, ...],
    outputs: tuple[int, ...],
) -> None:
    """Check each operator, and the data flow: LiteRT runs operators in file order, so every
    input must be a constant, a variable, a subgraph input or an earlier operator's output."""
    const = [t.kind == CONSTANT for t in infos]
    ready = {i for i, t in enumerate(infos) if t.kind != ACTIVATION} | set(inputs)
    flow: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    writer: dict[int, str] = {t: f"subgraph {index} input" for t in inputs}
    for op in sg.tables(3, f"subgraph {index} operator"):
        op_in, op_out = check_operator(m, index, op, len(infos), const)
        code = m.opcodes[op.scalar(0, U32)]
        check_op_tensors(op.what, code, op_in, op_out, infos)
        check_op_options(op, code, op_in, op_out, infos)
        flow.append((op_in, op_out))
        if code == WHILE:
            m.loops.append((op.what, *while_subgraphs(op)))
        for k, t in enumerate(op_in):
            if t != -1 and t not in ready:
                raise Corrupt(f"{op.what} input {k} (tensor {t}) is read before it is written")
        for t in op_out:
            # One writer per tensor (SSA): XNNPACK defines each value once and crashed on a
            # tensor two operators wrote (found by tests/stress/semantic_fuzz.py).
            if t in writer:
                raise Corrupt(f"{op.what} writes tensor {t}, already written by {writer[t]}")
            writer[t] = op.what
        ready.update(op_out)
    for k, t in enumerate(outputs):
        if t not in ready:
            raise Corrupt(f"subgraph {index} output {k} (tensor {t}) is never written")
    m.graphs.append((inputs, outputs, flow))


def _check_loops(m: ModelFacts) -> None:
    """A WHILE whose condition reads only loop variables its body passes through unchanged can
    never stop once it starts: the interpreter would spin in ``invoke`` forever (LiteRT has no
    way to cancel a call). Found by ``tests/stress/semantic_fuzz.py``."""
    for what, cond, body in m.loops:
        c_in, c_out, c_flow = m.graphs[cond]
        b_in, b_out, _ = m.graphs[body]
        read = _reaches(c_out[:1], c_flow)
        used = [k for k, t in enumerate(c_in) if t in read]
        if len(b_in) != len(b_out) or len(c_in) != len(b_in):
            raise Corrupt(f"{what}: its condition and body do not take the same loop variables")
        if all(b_out[k] == b_in[k] for k in used):
            raise Corrupt(
                f"{what} never ends once entered: its condition (subgraph {cond}) reads only "
                f"loop variables {used} that its body (subgraph {body}) passes through unchanged"
            )


def _reaches(
    targets: tuple[int, ...], flow: list[tuple[tuple[int, ...], tuple[int, ...]]]
) -> set[int]:
    """Tensors the ``targets`` depend on (walking the ops backwards)."""
    need = set(targets)
    for op_in, op_out in reversed(flow):
        if need.intersection(op_out):
            need.update(t for t in op_in if t != -1)
    return need


__all__ = ["MAX_BUILTIN_CODE", "TFLITE_IDENTIFIER", "TFLITE_SCHEMA_VERSION", "check_tflite"]
