"""Operator-level checks of a TFLite model: arity, omitted inputs, tensor types, quantization
scales and builtin options, against the kernel facts in ``op_rules``."""

from __future__ import annotations

import re

from . import op_rules as R
from .flatbuffer import I8, I32, U8, U32, U64, Corrupt, Table, check_union
from .schema_tables import BUILTIN_OPS, OPTIONS, OPTIONS_2
from .tensors import INT8, INT16, QUANT_TYPES, TENSOR_TYPES, UINT8, ModelFacts, TensorFacts

Idx = tuple[int, ...]  # tensor indices of an operator's inputs or outputs
Tensors = list[TensorFacts]  # the subgraph's tensors


def check_operator(
    m: ModelFacts, sg: int, op: Table, n: int, const: list[bool]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Check one operator; return its (inputs, outputs) tensor indices."""
    idx = op.scalar(0, U32)
    if idx >= len(m.opcodes):
        raise Corrupt(f"{op.what} uses operator code {idx}; the model has {len(m.opcodes)}")
    code = m.opcodes[idx]
    op.what = f"{op.what} (<op {code}>)"  # named only if an error is raised (see _name_ops)
    inputs = op.ints(1, f"{op.what} inputs")
    outputs = op.ints(2, f"{op.what} outputs")
    _check_arity(op.what, code, inputs, outputs)
    for kind, idxs in (("input", inputs), ("output", outputs), ("intermediate", op.ints(8, "x"))):
        for k, t in enumerate(idxs):
            if t == -1 and kind == "input":
                continue  # an omitted optional input (positions checked by _check_arity)
            if not 0 <= t < n:
                raise Corrupt(f"{op.what} {kind} {k} is tensor {t}; the subgraph has {n}")
            if kind == "output" and const[t]:
                # Outputs of constant (read-only, possibly mmapped) tensors crash on write.
                raise Corrupt(f"{op.what} output {k} (tensor {t}) is a constant")
    op.vector(5, 1, f"{op.what} custom options")
    op.vector(7, 1, f"{op.what} mutating variable inputs")
    offset, size = op.scalar(9, U64), op.scalar(10, U64)
    if offset > 1 and offset + size > m.r.end:
        raise Corrupt(f"{op.what} custom options lie past the end of the file")
    callees = m.calls.setdefault(sg, set())
    check_union(op, 3, 4, OPTIONS, f"{op.what} options", (m.n_subgraphs, callees))
    check_union(op, 11, 12, OPTIONS_2, f"{op.what} options", (m.n_subgraphs, callees))
    return inputs, outputs


def check_op_tensors(what: str, code: int, inputs: Idx, outputs: Idx, tensors: Tensors) -> None:
    """Tensor types and quantization an operator's kernel (or XNNPACK) relies on without checking.

    Found by tests/runtime/test_fuzz.py: mismatched types slip past XNNPACK's node checks and make
    its setup fail, and XNNPACK's clean-up path then frees memory twice (abort); quantized kernels
    given an int8 tensor without scales, or with per-channel scales where they read one scale,
    turn a zero scale into a multiplier and abort in a TFLITE_CHECK.
    """
    ins = [tensors[t] for t in inputs if t != -1]
    outs = [tensors[t] for t in outputs]
    same = ins + outs if code in R.SAME_TYPE else []
    if code in R.SAME_TYPE_AS_INPUT and len(inputs) > R.SAME_TYPE_AS_INPUT[code]:
        first = inputs[R.SAME_TYPE_AS_INPUT[code]]
        same = ([tensors[first]] if first != -1 else []) + outs
    if code in R.SHAPE_PRESERVING and ins and outs and ins[0].shape != outs[0].shape:
        # XNNPACK precomputes these outputs from constant inputs into a buffer sized by the
        # declared output shape: a smaller one is a heap overflow.
        raise Corrupt(
            f"{what} output shape {list(outs[0].shape)} differs from its input's "
            f"{list(ins[0].shape)}"
        )
    if len({t.ttype for t in same}) > 1:
        types = ", ".join(TENSOR_TYPES[t.ttype][0] for t in same)
        raise Corrupt(f"{what} mixes tensor types ({types}); its kernel needs one type")
    if code in R.OUTPUT_TYPES and ins and outs:
        _check_output_type(what, code, ins, outs)
    if code in R.REQUANTIZING:
        per_channel = R.PER_CHANNEL_INPUTS.get(code, ())
        for k, t in [*enumerate(inputs), *((None, t) for t in outputs)]:
            info = tensors[t] if t != -1 else None
            if info is None or info.ttype not in QUANT_TYPES:
                continue
            if not info.scales:
                raise Corrupt(f"{what}: tensor {t} is {TENSOR_TYPES[info.ttype][0]} without "
                               "quantization parameters")  # fmt: skip
            if len(info.scales) > 1 and k not in per_channel:
                raise Corrupt(f"{what}: tensor {t} has per-channel scales where the kernel "
                               "reads one scale")  # fmt: skip
    _check_requantization(what, code, inputs, outputs, tensors)


def _check_output_type(
    what: str, code: int, ins: list[TensorFacts], outs: list[TensorFacts]
) -> None:
    """The output type must be one the kernel writes for its input type (a float SOFTMAX
    writing into an int8 output overruns the heap and aborts the process later, at free)."""
    allowed = R.OUTPUT_TYPES[code]
    got_in, got_out = TENSOR_TYPES[ins[0].ttype][0], TENSOR_TYPES[outs[0].ttype][0]
    outs_ok = allowed.get(got_in, allowed.get("*"))
    if outs_ok is None:
        kinds = ", ".join(k for k in allowed if k != "*")
        raise Corrupt(f"{what} has a {got_in} input; its kernel takes {kinds}")
    if got_out not in outs_ok:
        raise Corrupt(
            f"{what} writes {got_out} from a {got_in} input; its kernel writes {', '.join(outs_ok)}"
        )
    if code in R.SAME_INPUT_TYPES and len({t.ttype for t in ins}) > 1:
        types = ", ".join(TENSOR_TYPES[t.ttype][0] for t in ins)
        raise Corrupt(f"{what} compares tensors of different types ({types})")


def _check_requantization(
    what: str, code: int, inputs: Idx, outputs: Idx, tensors: Tensors
) -> None:
    """Scale combinations that make a quantized kernel abort in Prepare.

    Quantized ADD/SUB and SQUARED_DIFFERENCE rescale through
    ``QuantizeMultiplierSmallerThanOneExp``, which aborts the process unless the output
    multiplier is < 1: ADD/SUB 2*max(in) / (2^20 * out) (2^15 for int16); SQUARED_DIFFERENCE
    (2*max(in))^2 / (2^14 * out).
    """
    if code in R.CONV_LIKE:
        _check_conv_requantization(what, code, inputs, outputs, tensors)
    if code not in R.ADD_LIKE or len(inputs) != 2 or -1 in inputs:
        return
    a, b, out = tensors[inputs[0]], tensors[inputs[1]], tensors[outputs[0]]
    if out.ttype not in (INT8, UINT8, INT16) or not (a.scales and b.scales and out.scales):
        return
    twice_max = 2.0 * max(a.scales[0], b.scales[0])
    if code == R.SQUARED_DIFFERENCE:
        if out.ttype == INT16:
            return  # its int16 kernel requantizes without the check
        multiplier = twice_max * twice_max / ((1 << 14) * out.scales[0])
    else:
        multiplier = twice_max / ((1 << (15 if out.ttype == INT16 else 20)) * out.scales[0])
    if not multiplier < 1.0:
        raise Corrupt(
            f"{what}: output scale {out.scales[0]:g} is too small for input scales "
            f"{a.scales[0]:g} and {b.scales[0]:g} (the kernel would abort)"
        )


def _check_conv_requantization(
    what: str, code: int, inputs: Idx, outputs: Idx, tensors: Tensors
) -> None:
    """XNNPACK accepts an int8 conv/FC after checking the first filter scale only, then fails to
    create it when another channel's input * filter / output scale is outside [2^-32, 256), and
    its clean-up path frees memory twice (abort). Check every channel."""
    xi, wi = R.CONV_LIKE[code]
    if len(inputs) <= max(xi, wi) or inputs[xi] == -1 or inputs[wi] == -1:
        return
    x, w, out = tensors[inputs[xi]], tensors[inputs[wi]], tensors[outputs[0]]
    if out.ttype not in (INT8, UINT8) or not (x.scales and w.scales and out.scales):
        return
    for c, ws in enumerate(w.scales):
        r = x.scales[0] * ws / out.scales[0]
        if ws and not 2.0**-32 <= r < 256.0:
            raise Corrupt(
                f"{what}: requantization scale {r:g} (input {x.scales[0]:g} x filter {ws:g} / "
                f"output {out.scales[0]:g}, channel {c}) is outside [2^-32, 256)"
            )


def check_op_options(op: Table, code: int, inputs: Idx, outputs: Idx, tensors: Tensors) -> None:
    """Builtin options that XNNPACK or the kernels trust (found by the fuzz tests)."""
    if code in R.WINDOW_OPTIONS:
        _check_window(op, code, inputs, outputs, tensors)
    elif code in R.COUNT_OPTIONS:
        # XNNPACK's SPLIT visitor indexes the outputs num_splits times before any check.
        options_type, fid, what, io = R.COUNT_OPTIONS[code]
        opts = op.table(4, f"{op.what} options") if op.scalar(3, U8) == options_type else None
        count = opts.scalar(fid, I32) if opts else 0
        have = len(outputs) if io == "outputs" else len(inputs)
        if count != have:
            raise Corrupt(f"{op.what}: {what} is {count} but the operator has {have} {io}")


def _check_window(op: Table, code: int, inputs: Idx, outputs: Idx, tensors: Tensors) -> None:
    """Padding, strides, dilations and filter of a 2-D conv or pool give the declared output.

    LiteRT sizes the output from these at Prepare; a bad padding enum or a window larger than
    the input yields an empty tensor that later kernels (e.g. int16 RESIZE_BILINEAR) overrun.
    """
    options_type, fids = R.WINDOW_OPTIONS[code]
    if op.scalar(3, U8) != options_type or (opts := op.table(4, "x")) is None:
        raise Corrupt(f"{op.what} lacks its {OPTIONS[options_type][0]}")
    # An absent field is the schema's default, as LiteRT reads it (filter sizes default to 0,
    # dilations to 1): the generated table knows which.
    fields = OPTIONS[options_type][1]
    pad, sw, sh, dw, dh, fw, fh = (
        None if f is None else opts.scalar(f, I8 if i == 0 else I32, fields[f][2])
        for i, f in enumerate(fids)
    )
    dw, dh = (1 if dw is None else dw), (1 if dh is None else dh)  # pools: no dilation
    if pad not in (0, 1):
        raise Corrupt(f"{op.what} has padding {pad}, expected 0 (SAME) or 1 (VALID)")
    if fw is None:  # conv: the filter is weights [out, h, w, in] / depthwise [1, h, w, out]
        w = tensors[inputs[1]].shape
        fh, fw = (w[1], w[2]) if len(w) == 4 else (1, 1)
    if min(sw, sh, dw, dh, fw, fh) < 1:
        raise Corrupt(
            f"{op.what} has stride {sw}x{sh}, dilation {dw}x{dh}, filter {fw}x{fh}: "
            "each must be >= 1"
        )
    x, out = tensors[inputs[0]], tensors[outputs[0]]
    if len(x.shape) != 4 or len(out.shape) != 4:
        return  # the kernel rejects other ranks itself
    for axis, f, stride, dil in ((1, fh, sh, dh), (2, fw, sw, dw)):
        size, declared = x.static_dim(axis), out.static_dim(axis)
        if size is None:
            continue
        window = (f - 1) * dil + 1
        expect = -(-size // stride) if pad == 0 else -(-(size - window + 1) // stride)
        if expect < 1 or (declared is not None and declared != expect):
            raise Corrupt(
                f"{op.what}: input size {size} with window {window}, stride {stride} and "
                f"{('SAME', 'VALID')[pad]} padding gives output size {max(expect, 0)}, "
                f"the model declares {declared}"
            )


def _check_arity(what: str, code: int, inputs: tuple[int, ...], outputs: tuple[int, ...]) -> None:
    """Input/output counts and omitted (-1) inputs the kernels and delegates accept.

    XNNPACK and several kernels index ``node->inputs`` before (or without) checking its size, so
    an op with too few inputs, or -1 where an input is not optional, reads past an array and
    crashes, e.g. XNNPACK's STRIDED_SLICE visitor (found by tests/runtime/test_fuzz.py).
    """
    if code in R.ARITY:
        lo_in, hi_in, lo_out, hi_out = R.ARITY[code]
    else:  # ops not in the table: only the generic rules
        lo_in = 0 if code in R.NO_INPUTS_OK else 1
        lo_out = 0 if code in R.NO_OUTPUTS_OK else 1
        hi_in = hi_out = 1 << 30
    if not lo_in <= len(inputs) <= hi_in:
        raise Corrupt(f"{what} has {len(inputs)} inputs, expected {_range(lo_in, hi_in)}")
    if not lo_out <= len(outputs) <= hi_out:
        raise Corrupt(f"{what} has {len(outputs)} outputs, expected {_range(lo_out, hi_out)}")
    optional = R.OPTIONAL_INPUTS.get(code, ())
    for k, t in enumerate(inputs):
        if t == -1 and optional is not None and k not in optional:
            raise Corrupt(f"{what} input {k} is omitted (-1) but is not optional")


def _range(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"at least {lo}" if hi >= 1 << 30 else f"{lo}..{hi}"


def while_subgraphs(op: Table) -> tuple[int, int]:
    """(cond, body) subgraph indices of a WHILE operator (0 when its options are absent)."""
    if op.scalar(3, U8) != R.options_kind("WhileOptions"):
        return 0, 0
    opts = op.table(4, f"{op.what} options")
    return (opts.scalar(0, I32), opts.scalar(1, I32)) if opts else (0, 0)


def name_ops(message: str) -> str:
    """Replace ``<op N>`` markers with builtin op names (named only when an error is raised)."""
    if "<op " not in message:
        return message
    return re.sub(r"<op (\d+)>", lambda m: BUILTIN_OPS.get(int(m[1]), f"builtin {m[1]}"), message)
