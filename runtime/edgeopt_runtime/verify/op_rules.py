"""What LiteRT's kernels (and XNNPACK) assume about each builtin op without checking it.

Hand-written from the kernels' Prepare/Eval code and from what the fuzz tests crashed on; ops are
named, and ``codes`` turns names into the schema's numbers (``schema_tables.BUILTIN_OPS``, which
is generated), so a typo fails at import instead of silently checking nothing.

* ``ARITY``: input/output counts; ``OPTIONAL_INPUTS``: positions that may be omitted (-1).
* ``SAME_TYPE`` / ``SAME_TYPE_AS_INPUT``: tensor types that must agree.
* ``OUTPUT_TYPES``: per op, the output types each input type may produce (a float SOFTMAX writing
  into an int8 tensor overruns the heap: issue #10's QUANTIZE -> SOFTMAX opcode swap).
* ``REQUANTIZING`` / ``PER_CHANNEL_INPUTS``: quantized kernels that derive multipliers from scales.
* ``COUNT_OPTIONS`` / ``WINDOW_OPTIONS``: builtin options the kernels size buffers from.
"""

from __future__ import annotations

from .schema_tables import BUILTIN_OPS, OPTIONS

_CODE_OF = {name: code for code, name in BUILTIN_OPS.items()}
_OPTIONS_OF = {name: kind for kind, (name, _) in OPTIONS.items()}


def codes(names: str) -> tuple[int, ...]:
    """Builtin codes of whitespace-separated op names (KeyError on an unknown name)."""
    return tuple(_CODE_OF[n] for n in names.split())


def op(name: str) -> int:
    return _CODE_OF[name]


def options_kind(name: str) -> int:
    return _OPTIONS_OF[name]


CUSTOM = op("CUSTOM")
WHILE = op("WHILE")
MANY = 1 << 30

# -- arity -------------------------------------------------------------------------------------
_UNARY = codes("""
    ABS CEIL FLOOR ROUND NEG SQRT RSQRT SQUARE EXP LOG SIN COS TANH LOGISTIC RELU RELU6
    RELU_N1_TO_1 RELU_0_TO_1 ELU GELU HARD_SWISH LEAKY_RELU SOFTMAX LOG_SOFTMAX L2_NORMALIZATION
    QUANTIZE DEQUANTIZE SIGN CAST ZEROS_LIKE LOGICAL_NOT AVERAGE_POOL_2D MAX_POOL_2D L2_POOL_2D
    SPACE_TO_DEPTH DEPTH_TO_SPACE SQUEEZE SHAPE LOCAL_RESPONSE_NORMALIZATION READ_VARIABLE DENSIFY
""")
_BINARY = codes("""
    ADD SUB MUL DIV MAXIMUM MINIMUM SQUARED_DIFFERENCE POW PRELU FLOOR_DIV FLOOR_MOD EQUAL
    NOT_EQUAL LESS LESS_EQUAL GREATER GREATER_EQUAL LOGICAL_AND LOGICAL_OR MIRROR_PAD MEAN SUM
    REDUCE_MAX REDUCE_MIN REDUCE_PROD REDUCE_ANY TRANSPOSE RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR
    BATCH_MATMUL GATHER GATHER_ND EXPAND_DIMS ARG_MAX ARG_MIN TILE BROADCAST_TO FILL CUMSUM
    REVERSE_V2 EMBEDDING_LOOKUP
""")
_TERNARY = codes("""
    RANGE SELECT SELECT_V2 BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND SLICE SCATTER_ND
    DYNAMIC_UPDATE_SLICE
""")
# builtin code -> (min inputs, max inputs, min outputs, max outputs)
ARITY: dict[int, tuple[int, int, int, int]] = {
    **{c: (1, 1, 1, 1) for c in _UNARY},
    **{c: (2, 2, 1, 1) for c in _BINARY},
    **{c: (3, 3, 1, 1) for c in _TERNARY},
    op("CONV_2D"): (2, 3, 1, 1),  # input, filter, optional bias
    op("DEPTHWISE_CONV_2D"): (3, 3, 1, 1),  # LiteRT's kernel segfaults without a bias input
    op("FULLY_CONNECTED"): (2, 3, 1, 2),  # + shuffled-weights workspace output
    op("TRANSPOSE_CONV"): (3, 4, 1, 1),  # output shape, filter, input, optional bias
    op("CONCATENATION"): (1, MANY, 1, 1),
    op("PACK"): (1, MANY, 1, 1),
    op("UNPACK"): (1, 1, 1, MANY),
    op("SPLIT"): (2, 2, 1, MANY),  # axis, input
    op("SPLIT_V"): (3, 3, 1, MANY),
    op("TOPK_V2"): (2, 2, 2, 2),
    op("RESHAPE"): (1, 2, 1, 1),  # input, optional shape tensor
    op("PAD"): (2, 3, 1, 1),  # shares its kernel with PADV2
    op("PADV2"): (2, 3, 1, 1),  # input, paddings, optional constant
    op("STRIDED_SLICE"): (4, 4, 1, 1),
    op("VAR_HANDLE"): (0, 0, 1, 1),
    op("ASSIGN_VARIABLE"): (2, 2, 0, 0),
    op("CALL_ONCE"): (0, 0, 0, 0),
}
NO_INPUTS_OK = frozenset(codes("CUSTOM WHILE STABLEHLO_IOTA"))  # WHILE: no loop variables
NO_OUTPUTS_OK = frozenset(codes("CUSTOM WHILE IF"))
# builtin code -> input positions that may be -1 (omitted); None: any position. Ops not listed
# have no optional inputs.
OPTIONAL_INPUTS: dict[int, frozenset[int] | None] = {
    op("CONV_2D"): frozenset({2}),  # bias
    op("DEPTHWISE_CONV_2D"): frozenset({2}),
    op("FULLY_CONNECTED"): frozenset({2}),
    op("TRANSPOSE_CONV"): frozenset({3}),
    op("CONV_3D"): frozenset({2}),
    op("CONV_3D_TRANSPOSE"): frozenset({3}),
    op("PAD"): frozenset({2}),  # constant
    op("PADV2"): frozenset({2}),
    op("LSH_PROJECTION"): frozenset({2}),  # weight
    op("SVDF"): frozenset({3}),  # bias
    **dict.fromkeys(
        codes("""LSTM UNIDIRECTIONAL_SEQUENCE_LSTM BIDIRECTIONAL_SEQUENCE_LSTM
        BIDIRECTIONAL_SEQUENCE_RNN UNIDIRECTIONAL_SEQUENCE_RNN CUSTOM"""),
        None,
    ),  # many optional inputs; CUSTOM: unknown
}

# -- tensor types ------------------------------------------------------------------------------
# Every input and output of these ops has one type (elementwise math, activations, pooling, concat).
SAME_TYPE = frozenset(
    codes("""
    ADD SUB MUL DIV MAXIMUM MINIMUM SQUARED_DIFFERENCE POW PRELU FLOOR_DIV FLOOR_MOD ABS CEIL FLOOR
    ROUND NEG SQRT RSQRT SQUARE EXP LOG SIN COS TANH LOGISTIC RELU RELU6 RELU_N1_TO_1 RELU_0_TO_1
    ELU GELU HARD_SWISH LEAKY_RELU LOG_SOFTMAX L2_NORMALIZATION AVERAGE_POOL_2D MAX_POOL_2D
    L2_POOL_2D SPACE_TO_DEPTH DEPTH_TO_SPACE LOCAL_RESPONSE_NORMALIZATION SIGN ZEROS_LIKE
    CONCATENATION PACK
""")
)
# builtin code -> the input position whose type all outputs share (data-movement ops, reductions,
# convolutions: hybrid ones take int8 weights but keep the activation type).
SAME_TYPE_AS_INPUT = dict.fromkeys(
    codes("""
    RESHAPE TRANSPOSE PAD PADV2 MIRROR_PAD STRIDED_SLICE SLICE MEAN SUM REDUCE_MAX REDUCE_MIN
    REDUCE_PROD RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR GATHER GATHER_ND TILE BROADCAST_TO
    EXPAND_DIMS SPLIT_V UNPACK BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND REVERSE_V2 SQUEEZE CONV_2D
    DEPTHWISE_CONV_2D FULLY_CONNECTED BATCH_MATMUL
"""),
    0,
) | {op("SPLIT"): 1, op("TRANSPOSE_CONV"): 2}  # axis first; output shape first
SHAPE_PRESERVING = frozenset(codes("DEQUANTIZE DENSIFY"))

_Q = ("int8", "uint8", "int16")
_INTS = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "int4")
# builtin code -> {input 0 type: output 0 types}; "*" for any other input type. An input type
# that is not listed (and no "*") is refused too: the kernel would read it as something else.
OUTPUT_TYPES: dict[int, dict[str, tuple[str, ...]]] = {
    op("SOFTMAX"): {
        "float32": ("float32",),
        "int8": ("int8", "int16"),
        "uint8": ("uint8", "int16"),
        "int16": ("int16",),
    },  # fmt: skip
    op("QUANTIZE"): {"float32": _Q, "float16": _Q, **dict.fromkeys(_Q, _Q)},
    op("DEQUANTIZE"): dict.fromkeys(
        ("int8", "uint8", "int16", "float16", "int4", "int32"), ("float32",)
    ),  # fmt: skip
    **dict.fromkeys(codes("ARG_MAX ARG_MIN"), {"*": ("int32", "int64")}),
    op("SHAPE"): {"*": ("int32", "int64")},
    **dict.fromkeys(
        codes("EQUAL NOT_EQUAL LESS LESS_EQUAL GREATER GREATER_EQUAL"), {"*": ("bool",)}
    ),
    **dict.fromkeys(codes("LOGICAL_AND LOGICAL_OR LOGICAL_NOT REDUCE_ANY"), {"bool": ("bool",)}),
    op("CAST"): {
        t: ("float32", "float16", "float64", "bool", *_INTS)
        for t in ("float32", "float16", "float64", "bool", *_INTS)
    },  # fmt: skip
}
# Comparisons: both inputs of one type (the output is bool).
SAME_INPUT_TYPES = frozenset(codes("EQUAL NOT_EQUAL LESS LESS_EQUAL GREATER GREATER_EQUAL"))

# Quantized kernels of these ops derive fixed-point multipliers from the tensors' scales.
REQUANTIZING = frozenset(
    codes("""
    ADD SUB MUL DIV SQUARED_DIFFERENCE CONV_2D DEPTHWISE_CONV_2D FULLY_CONNECTED TRANSPOSE_CONV
    BATCH_MATMUL SOFTMAX LOG_SOFTMAX LOGISTIC TANH MEAN SUM REDUCE_PROD LEAKY_RELU PRELU
    HARD_SWISH L2_NORMALIZATION QUANTIZE DEQUANTIZE AVERAGE_POOL_2D CONCATENATION RELU RELU6
    RELU_N1_TO_1 ELU GELU EXP LOG RSQRT SQRT SQUARE ABS POW
""")
)
# Input positions that may carry per-channel scales (filters, biases, weight-only dequantize);
# None: the outputs.
PER_CHANNEL_INPUTS: dict[int, tuple[int | None, ...]] = {
    op("CONV_2D"): (1, 2), op("DEPTHWISE_CONV_2D"): (1, 2), op("FULLY_CONNECTED"): (1, 2),
    op("TRANSPOSE_CONV"): (1, 3), op("BATCH_MATMUL"): (1,), op("DEQUANTIZE"): (0,),
    op("QUANTIZE"): (0, None),
}  # fmt: skip
# Quantized ADD/SUB/SQUARED_DIFFERENCE rescale through QuantizeMultiplierSmallerThanOneExp.
ADD_LIKE = frozenset(codes("ADD SUB SQUARED_DIFFERENCE"))
SQUARED_DIFFERENCE = op("SQUARED_DIFFERENCE")
# builtin code -> (input position, filter position) of ops XNNPACK runs as int8 convolutions.
CONV_LIKE = {
    op("CONV_2D"): (0, 1), op("DEPTHWISE_CONV_2D"): (0, 1), op("FULLY_CONNECTED"): (0, 1),
    op("TRANSPOSE_CONV"): (2, 1),
}  # fmt: skip

# -- builtin options ---------------------------------------------------------------------------
# builtin code -> (options kind, field id of the count, its name, what it counts).
COUNT_OPTIONS = {
    op("SPLIT"): (options_kind("SplitOptions"), 0, "num_splits", "outputs"),
    op("SPLIT_V"): (options_kind("SplitVOptions"), 0, "num_splits", "outputs"),
    op("PACK"): (options_kind("PackOptions"), 0, "values_count", "inputs"),
    op("UNPACK"): (options_kind("UnpackOptions"), 0, "num", "outputs"),
}
# builtin code -> (options kind, (padding, stride w, stride h, dilation w, dilation h, filter w,
# filter h) field ids; None: not in these options (dilation 1, filter from the weights)).
WINDOW_OPTIONS = {
    op("CONV_2D"): (options_kind("Conv2DOptions"), (0, 1, 2, 4, 5, None, None)),
    op("DEPTHWISE_CONV_2D"): (options_kind("DepthwiseConv2DOptions"), (0, 1, 2, 5, 6, None, None)),
    **{
        c: (options_kind("Pool2DOptions"), (0, 1, 2, None, None, 3, 4))
        for c in codes("AVERAGE_POOL_2D MAX_POOL_2D L2_POOL_2D")
    },
}
