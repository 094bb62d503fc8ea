"""Schemas and gradient makers (no kernels) for the layers of the legacy training nets.

Conv, MaxPool, AveragePool, Softmax, LabelCrossEntropy, Flatten, Dropout, LRN, Concat and
Reshape, plus the gradient op types their makers emit (ConvGradient, MaxPoolGradient,
SoftmaxGradient, ..., ResizeLike, Split). With these declared, a legacy net's ops can be
checked against their schemas and its gradient graph can be built and inspected; running it
needs kernels that c2lite does not provide yet ("no kernel on any device").

The schemas follow the late (2018+) Caffe2 declarations, which the makers' serialized test
cases also come from. Consequences for older nets, all faithful to Caffe2:

* ``Dropout`` requires the ``is_test`` argument (Caffe2's ``ArgIsTest``).
* ``MaxPool`` has exactly one output; the 2015/2016 nets' second "index" output is rejected.
* ``Flatten``'s gradient is ``ResizeLike(dY, X)``; 2016 nets show its old name ``ReshapeLike``,
  which is declared here too (two inputs, one output) so those nets verify.

Shape inference follows Caffe2's floor-rounded conv/pool arithmetic and gives up (unknown
shape) on anything it cannot see statically, such as ``legacy_pad`` or missing input shapes.
"""
from __future__ import annotations

from typing import Any, Optional

from c2lite.errors import GradientError
from c2lite.gradient import GradientMakerBase, SHOULD_NOT_DO_GRADIENT, register_gradient
from c2lite.proto import caffe2_pb2
from c2lite.schema import OPERATOR_SCHEMA

UNKNOWN = (None, None)
INT_MAX = 2**31 - 1


# ---------------------------------------------------------------------------------------------
# small helpers over OperatorDef arguments
# ---------------------------------------------------------------------------------------------
def _args(op: Any) -> dict:
    return {a.name: a for a in op.arg}


def _int(args: dict, name: str, default: Optional[int] = None) -> Optional[int]:
    a = args.get(name)
    return int(a.i) if a is not None and a.HasField("i") else default


def _ints(args: dict, name: str) -> list:
    a = args.get(name)
    return [int(v) for v in a.ints] if a is not None else []


def _str(args: dict, name: str, default: str) -> str:
    a = args.get(name)
    if a is None or not a.HasField("s"):
        return default
    return a.s.decode() if isinstance(a.s, bytes) else str(a.s)


def _prod(dims: Any) -> int:
    out = 1
    for d in dims:
        out *= int(d)
    return out


def _per_dim(args: dict, single: str, repeated: str, h: str, w: str, nd: int,
             default: int) -> Optional[list]:
    """One value per spatial dim from ``single``, ``repeated`` or the ``h``/``w`` pair."""
    if single in args:
        return [_int(args, single, default)] * nd
    if repeated in args:
        return _ints(args, repeated)
    if h in args or w in args:
        return [_int(args, h, default), _int(args, w, default)]
    return [default] * nd


def _conv_pool_shape(op: Any, x: tuple, out_channels: Optional[int],
                     w: Optional[tuple] = None) -> Optional[tuple]:
    """Output dims of a conv (``w`` given) or pool op on input dims ``x``, else None."""
    args = _args(op)
    if _int(args, "legacy_pad", 0) != 0 or len(x) < 3:  # only NOTSET is static arithmetic
        return None
    order = _str(args, "order", "NCHW")
    if order not in ("NCHW", "NHWC"):
        return None
    spatial = list(x[2:]) if order == "NCHW" else list(x[1:-1])
    channels = x[1] if order == "NCHW" else x[-1]
    nd = len(spatial)
    if _int(args, "global_pooling", 0):
        kernel = list(spatial)
    elif "kernel" in args or "kernels" in args or "kernel_h" in args or "kernel_w" in args:
        kernel = _per_dim(args, "kernel", "kernels", "kernel_h", "kernel_w", nd, 1)
    elif w is not None and len(w) == nd + 2:
        kernel = list(w[2:]) if order == "NCHW" else list(w[1:-1])
    else:
        return None
    stride = _per_dim(args, "stride", "strides", "stride_h", "stride_w", nd, 1)
    dilation = _per_dim(args, "dilation", "dilations", "dilation_h", "dilation_w", nd, 1)
    if "pad" in args:
        pads = [_int(args, "pad", 0)] * (2 * nd)
    elif "pads" in args:
        pads = _ints(args, "pads")
    elif nd == 2:
        pads = [_int(args, k, 0) for k in ("pad_t", "pad_l", "pad_b", "pad_r")]
    else:
        pads = [0] * (2 * nd)
    if not (len(kernel) == len(stride) == len(dilation) == nd and len(pads) == 2 * nd):
        return None
    out = []
    for i in range(nd):
        span = dilation[i] * (kernel[i] - 1) + 1
        if stride[i] <= 0:
            return None
        size = (spatial[i] + pads[i] + pads[i + nd] - span) // stride[i] + 1
        if size < 0:
            return None
        out.append(size)
    c = channels if out_channels is None else out_channels
    return (x[0], c, *out) if order == "NCHW" else (x[0], *out, c)


def _conv_inference(op: Any, ins: list) -> list:
    (xs, xt), (ws, _) = ins[0], ins[1]
    if xs is None or ws is None or not ws:
        return [(None, xt)]
    m = ws[0]  # filters are (M, C/group, k...) in NCHW and (M, k..., C/group) in NHWC
    return [(_conv_pool_shape(op, tuple(xs), m, tuple(ws)), xt)]


def _pool_inference(op: Any, ins: list) -> list:
    xs, xt = ins[0]
    if xs is None:
        return [(None, xt)] * len(op.output)
    return [(_conv_pool_shape(op, tuple(xs), None), xt)] * len(op.output)


def _conv_grad_inference(op: Any, ins: list) -> list:
    (xs, xt), (ws, wt) = ins[0], ins[1]
    no_bias = bool(_int(_args(op), "no_bias", 0))
    outs = [(ws, wt)]
    if not no_bias:
        outs.append(((ws[0],) if ws else None, wt))
    outs.append((xs, xt))
    return outs[: len(op.output)]


def _like_input0(op: Any, ins: list) -> list:
    return [ins[0]] * len(op.output)


# ---------------------------------------------------------------------------------------------
# Conv
# ---------------------------------------------------------------------------------------------
def _conv_args(schema: Any) -> Any:
    return (schema
            .Arg("kernel", "kernel size for every spatial dim (else kernels, kernel_h/kernel_w, "
                 "or the filter's own shape)")
            .Arg("kernels", "kernel size per spatial dim")
            .Arg("stride", "stride for every spatial dim (default 1); also strides, "
                 "stride_h/stride_w")
            .Arg("pad", "padding for every side (default 0); also pads (all begins, then all "
                 "ends) and pad_t/pad_l/pad_b/pad_r")
            .Arg("dilation", "dilation for every spatial dim (default 1); also dilations, "
                 "dilation_h/dilation_w")
            .Arg("order", "NCHW (default) or NHWC")
            .Arg("legacy_pad", "old padding modes (VALID, SAME, CAFFE_LEGACY_POOLING)"))


_conv_args(OPERATOR_SCHEMA("Conv").NumInputs(2, 3).NumOutputs(1)
           .TensorInferenceFunction(_conv_inference)
           .Arg("group", "number of channel groups (default 1)")
           .Input(0, "X", "input, (N, C, spatial...) in NCHW")
           .Input(1, "filter", "(M, C/group, kernel...) in NCHW")
           .Input(2, "bias", "optional 1-D bias of M elements")
           .Output(0, "Y", "(N, M, out spatial...) in NCHW")
           .SetDoc("N-d convolution (cross-correlation) with optional bias."))

_conv_args(OPERATOR_SCHEMA("ConvGradient").NumInputs(2, 3).NumOutputs(1, 3)
           .TensorInferenceFunction(_conv_grad_inference)
           .Arg("group", "as in Conv").Arg("no_bias", "1 when the forward Conv had no bias")
           .Input(0, "X", "forward input").Input(1, "filter", "forward filter")
           .Input(2, "dY", "gradient of the output")
           .Output(0, "dfilter", "gradient of the filter")
           .Output(1, "dbias", "gradient of the bias (absent with no_bias), else dX")
           .Output(2, "dX", "gradient of the input (optional)")
           .SetDoc("Gradient of Conv."))


@register_gradient("Conv")
class GetConvGradient(GradientMakerBase):
    """ConvGradient(X, filter, dY) -> (dfilter, [dbias,] [dX]); without a bias input the op
    gets ``no_bias=1``; ``no_gradient_to_input`` drops dX."""

    def GetGradientDefs(self) -> list:
        n = len(self.def_.input)
        if n not in (2, 3):
            raise GradientError(f"Conv gradient needs 2 or 3 inputs, got {n}")
        with_dx = not any(a.name == "no_gradient_to_input" and a.i for a in self.def_.arg)
        inputs = [self.I(0), self.I(1), self.GO(0)]
        outputs = [self.GI(1)]
        args = None
        if n == 3:
            outputs.append(self.GI(2))
        else:
            no_bias = caffe2_pb2.Argument()
            no_bias.name, no_bias.i = "no_bias", 1
            args = [no_bias]
        if with_dx:
            outputs.append(self.GI(0))
        return self.SingleGradientDef(self.def_.type + "Gradient", "", inputs, outputs, args)


# ---------------------------------------------------------------------------------------------
# MaxPool / AveragePool
# ---------------------------------------------------------------------------------------------
for _pool, _what in [("MaxPool", "maximum"), ("AveragePool", "mean")]:
    _conv_args(OPERATOR_SCHEMA(_pool).NumInputs(1).NumOutputs(1)
               .TensorInferenceFunction(_pool_inference)
               .Arg("global_pooling", "pool over the whole spatial extent")
               .Input(0, "X", "input, (N, C, spatial...) in NCHW")
               .Output(0, "Y", f"the {_what} of each window")
               .SetDoc(f"{_pool}: the {_what} over sliding windows of each channel."))
    _conv_args(OPERATOR_SCHEMA(_pool + "Gradient").NumInputs(3).NumOutputs(1)
               .TensorInferenceFunction(_like_input0)
               .Arg("global_pooling", "as in the forward op")
               .Input(0, "X", "forward input").Input(1, "Y", "forward output")
               .Input(2, "dY", "gradient of Y").Output(0, "dX", "gradient of X")
               .SetDoc(f"Gradient of {_pool}."))


class GetPoolGradient(GradientMakerBase):
    """<Pool>Gradient(X, Y, dY) -> dX."""

    def GetGradientDefs(self) -> list:
        return self.SingleGradientDef(self.def_.type + "Gradient", "",
                                      [self.I(0), self.O(0), self.GO(0)], [self.GI(0)])


register_gradient("MaxPool")(GetPoolGradient)
register_gradient("AveragePool")(GetPoolGradient)


# ---------------------------------------------------------------------------------------------
# Softmax
# ---------------------------------------------------------------------------------------------
(OPERATOR_SCHEMA("Softmax").NumInputs(1).NumOutputs(1).IdenticalTypeAndShape()
 .Arg("axis", "X is viewed as a matrix split at this axis (default 1)")
 .Input(0, "X", "input").Output(0, "Y", "row-wise softmax of X, X's shape")
 .SetDoc("Softmax over the trailing dims from `axis` on."))

(OPERATOR_SCHEMA("SoftmaxGradient").NumInputs(2).NumOutputs(1)
 .TensorInferenceFunction(_like_input0)
 .Input(0, "Y", "forward output").Input(1, "dY", "gradient of Y")
 .Output(0, "dX", "gradient of X").SetDoc("Gradient of Softmax, from its output."))


@register_gradient("Softmax")
class GetSoftmaxGradient(GradientMakerBase):
    """SoftmaxGradient(Y, dY) -> dX."""

    def GetGradientDefs(self) -> list:
        return self.SingleGradientDef(self.def_.type + "Gradient", "",
                                      [self.O(0), self.GO(0)], [self.GI(0)])


# ---------------------------------------------------------------------------------------------
# LabelCrossEntropy
# ---------------------------------------------------------------------------------------------
(OPERATOR_SCHEMA("LabelCrossEntropy").NumInputs(2).NumOutputs(1)
 .TensorInferenceFunction(lambda op, ins: [((ins[0][0][0],) if ins[0][0] else None, ins[0][1])])
 .Input(0, "X", "(N, D) probabilities").Input(1, "label", "(N,) int32 class indices")
 .Output(0, "Y", "(N,) -log X[i, label[i]]")
 .SetDoc("Cross entropy of probabilities X against integer labels."))

(OPERATOR_SCHEMA("LabelCrossEntropyGradient").NumInputs(3).NumOutputs(1)
 .TensorInferenceFunction(lambda op, ins: [ins[0]])
 .Input(0, "X", "forward input").Input(1, "label", "forward labels")
 .Input(2, "dY", "gradient of Y").Output(0, "dX", "gradient of X")
 .SetDoc("Gradient of LabelCrossEntropy."))


@register_gradient("LabelCrossEntropy")
class GetLabelCrossEntropyGradient(GradientMakerBase):
    """LabelCrossEntropyGradient(X, label, dY) -> dX."""

    def GetGradientDefs(self) -> list:
        return self.SingleGradientDef("LabelCrossEntropyGradient", "",
                                      [self.I(0), self.I(1), self.GO(0)], [self.GI(0)])


# ---------------------------------------------------------------------------------------------
# Flatten and ResizeLike (and the 2016 name ReshapeLike)
# ---------------------------------------------------------------------------------------------
def _flatten_inference(op: Any, ins: list) -> list:
    xs, xt = ins[0]
    axis = _int(_args(op), "axis", 1)
    if xs is None or not 0 <= axis <= len(xs):
        return [(None, xt)]
    return [((_prod(xs[:axis]), _prod(xs[axis:])), xt)]


(OPERATOR_SCHEMA("Flatten").NumInputs(1).NumOutputs(1)
 .TensorInferenceFunction(_flatten_inference)
 .Arg("axis", "dims before it form the rows, the rest the columns (default 1)")
 .Input(0, "X", "input").Output(0, "Y", "2-D (prod(dims[:axis]), prod(dims[axis:]))")
 .SetDoc("Flatten a tensor into a matrix."))


@register_gradient("Flatten")
class GetFlattenGradient(GradientMakerBase):
    """ResizeLike(dY, X) -> dX."""

    def GetGradientDefs(self) -> list:
        return self.SingleGradientDef("ResizeLike", "", [self.GO(0), self.I(0)], [self.GI(0)])


(OPERATOR_SCHEMA("ResizeLike").NumInputs(2).NumOutputs(1)
 .TensorInferenceFunction(lambda op, ins: [(ins[1][0], ins[0][1])])
 .Input(0, "data", "the values").Input(1, "shape_like", "the tensor whose shape is taken")
 .Output(0, "output", "data with shape_like's shape (same number of elements)")
 .SetDoc("Copy `data` into the shape of `shape_like`."))
SHOULD_NOT_DO_GRADIENT("ResizeLike")

(OPERATOR_SCHEMA("ReshapeLike").NumInputs(2).NumOutputs(1)
 .TensorInferenceFunction(lambda op, ins: [(ins[1][0], ins[0][1])])
 .Input(0, "data", "the values").Input(1, "shape_like", "the tensor whose shape is taken")
 .Output(0, "output", "data with shape_like's shape")
 .SetDoc("The 2015/2016 name of ResizeLike, as written by Flatten's gradient in nets of "
         "that time. Declared so those nets verify; current makers emit ResizeLike."))


# ---------------------------------------------------------------------------------------------
# Dropout
# ---------------------------------------------------------------------------------------------
def _dropout_inference(op: Any, ins: list) -> list:
    out = [ins[0]]
    if len(op.output) == 2:
        out.append((ins[0][0], "bool"))
    return out


(OPERATOR_SCHEMA("Dropout").NumInputs(1).NumOutputs(1, 2).AllowInplace({(0, 0)})
 .TensorInferenceFunction(_dropout_inference)
 .Arg("ratio", "probability of zeroing an element (default 0.5)")
 .Arg("is_test", "non-zero: Y = X and no mask (required)", required=True)
 .Input(0, "X", "input").Output(0, "Y", "X with dropped elements zeroed and the rest scaled "
                                      "by 1/(1-ratio)")
 .Output(1, "mask", "bool mask of the kept elements (training only)")
 .SetDoc("Dropout. In training mode the kept elements are scaled by 1/(1-ratio)."))

(OPERATOR_SCHEMA("DropoutGrad").NumInputs(1, 2).NumOutputs(1).AllowInplace({(0, 0)})
 .TensorInferenceFunction(_like_input0)
 .Input(0, "dY", "gradient of Y").Input(1, "mask", "forward mask (training only)")
 .Output(0, "dX", "gradient of X").SetDoc("Gradient of Dropout."))


@register_gradient("Dropout")
class GetDropoutGradient(GradientMakerBase):
    """DropoutGrad(dY) -> dX with is_test set, else DropoutGrad(dY, mask) -> dX."""

    def GetGradientDefs(self) -> list:
        is_test = any(a.name == "is_test" and a.i for a in self.def_.arg)
        inputs = [self.GO(0)] if is_test else [self.GO(0), self.O(1)]
        return self.SingleGradientDef("DropoutGrad", "", inputs, [self.GI(0)])


# ---------------------------------------------------------------------------------------------
# LRN
# ---------------------------------------------------------------------------------------------
_LRN_ARGS = [("size", "number of channels summed over"), ("alpha", "scale"),
             ("beta", "exponent"), ("bias", "additive constant (default 1)"),
             ("order", "NCHW (default) or NHWC")]


def _lrn_schema(schema: Any) -> Any:
    for name, desc in _LRN_ARGS:
        schema = schema.Arg(name, desc)
    return schema


_lrn_schema(OPERATOR_SCHEMA("LRN").NumInputs(1).NumOutputs(1, 2)
            .TensorInferenceFunction(_like_input0)
            .Input(0, "X", "input").Output(0, "Y", "X / scale^beta")
            .Output(1, "scale", "optional bias + alpha/size * windowed sum of X^2")
            .SetDoc("Local response normalization across channels."))

_lrn_schema(OPERATOR_SCHEMA("LRNGradient").NumInputs(3).NumOutputs(1)
            .TensorInferenceFunction(_like_input0)
            .Input(0, "X", "forward input").Input(1, "Y", "forward output")
            .Input(2, "dY", "gradient of Y").Output(0, "dX", "gradient of X")
            .SetDoc("Gradient of LRN."))


@register_gradient("LRN")
class GetLRNGradient(GradientMakerBase):
    """LRNGradient(X, Y, dY) -> dX."""

    def GetGradientDefs(self) -> list:
        return self.SingleGradientDef("LRNGradient", "", [self.I(0), self.O(0), self.GO(0)],
                                      [self.GI(0)])


# ---------------------------------------------------------------------------------------------
# Concat / Split
# ---------------------------------------------------------------------------------------------
def _concat_axis(args: dict) -> int:
    if "axis" in args:
        return _int(args, "axis", -1)
    return 3 if _str(args, "order", "NCHW") == "NHWC" else 1


def _concat_inference(op: Any, ins: list) -> list:
    args = _args(op)
    if not ins or any(s is None for s, _ in ins):
        return [(None, ins[0][1] if ins else None), ((len(ins),), "int32")][: len(op.output)]
    add_axis = bool(_int(args, "add_axis", 0))
    first = list(ins[0][0])
    nd = len(first) + (1 if add_axis else 0)
    axis = _concat_axis(args)
    info = ((len(ins),), "int32")
    if not -nd <= axis < nd:
        return [(None, ins[0][1]), info][: len(op.output)]
    axis %= nd
    if add_axis:
        out = first[:axis] + [len(ins)] + first[axis:]
    else:
        out = list(first)
        out[axis] = sum(int(s[axis]) for s, _ in ins if len(s) > axis)
    return [(tuple(out), ins[0][1]), info][: len(op.output)]


(OPERATOR_SCHEMA("Concat").NumInputs(1, INT_MAX).NumOutputs(2)
 .TensorInferenceFunction(_concat_inference)
 .Arg("axis", "axis to join on (default: the C axis of `order`)")
 .Arg("order", "NCHW (default) or NHWC, used when axis is absent")
 .Arg("add_axis", "non-zero: stack along a new axis instead")
 .Input(0, "X_0", "first tensor; more may follow")
 .Output(0, "concat_result", "the inputs joined along axis")
 .Output(1, "split_info", "int32 size of each input along axis")
 .SetDoc("Concatenate tensors along an axis; also outputs the sizes Split needs to undo it."))


def _split_inference(op: Any, ins: list) -> list:
    n_out = len(op.output)
    unknown = [(None, ins[0][1] if ins else None)] * n_out
    if len(op.input) != 1 or not ins or ins[0][0] is None or n_out == 0:
        return unknown
    args = _args(op)
    dims = list(ins[0][0])
    axis = _concat_axis(args)
    add_axis = bool(_int(args, "add_axis", 0)) if "axis" in args else False
    if not -len(dims) <= axis < len(dims):
        return unknown
    axis %= len(dims)
    split = _ints(args, "split")
    size = dims[axis]
    if not split:
        if size % n_out:
            return unknown
        split = [size // n_out] * n_out
    if len(split) != n_out or (n_out if add_axis else sum(split)) != size:
        return unknown
    outs = []
    for part in split:
        d = list(dims)
        if add_axis:
            del d[axis]
        else:
            d[axis] = part
        outs.append((tuple(d), ins[0][1]))
    return outs


(OPERATOR_SCHEMA("Split").NumInputs(1, 2).NumOutputs(1, INT_MAX)
 .TensorInferenceFunction(_split_inference)
 .Arg("axis", "axis to split (default: the C axis of `order`)")
 .Arg("split", "length of each output (default: equal parts)")
 .Arg("order", "NCHW (default) or NHWC, used when axis is absent")
 .Arg("add_axis", "non-zero: remove the split axis from the outputs")
 .Input(0, "input", "tensor to split")
 .Input(1, "split", "optional 1-D lengths (instead of the argument)")
 .Output(0, "output_0", "first part; one output per part")
 .SetDoc("Split a tensor along an axis into parts."))


@register_gradient("Concat")
class GetConcatGradient(GradientMakerBase):
    """Split(dY, split_info) -> (dX_0, dX_1, ...); nothing without an output gradient."""

    def GetGradientDefs(self) -> list:
        if self.GradOut(0).IsEmpty():
            return []
        grads = [self.GI(i) for i in range(len(self.def_.input))]
        return self.SingleGradientDef("Split", "", [self.GO(0), self.O(1)], grads)


@register_gradient("Split")
class GetSplitGradient(GradientMakerBase):
    """Concat(dY_i for each output that has one) -> (dX, _dX_dims)."""

    def GetGradientDefs(self) -> list:
        grads = [self.GO(i) for i in range(len(self.def_.output))
                 if not self.GradOut(i).IsEmpty()]
        if not grads:
            return []
        dx = self.GI(0)
        return self.SingleGradientDef("Concat", "", grads, [dx, "_" + dx + "_dims"])


# ---------------------------------------------------------------------------------------------
# Reshape
# ---------------------------------------------------------------------------------------------
def _reshape_inference(op: Any, ins: list) -> list:
    xs, xt = ins[0]
    old = ((len(xs),) if xs is not None else None, "int64")
    args = _args(op)
    if "shape" not in args or len(op.input) != 1 or xs is None:
        return [(None, xt), old]
    shape = _ints(args, "shape")
    total = _prod(xs)
    new, unknown_at = [], None
    for i, d in enumerate(shape):
        if d == 0:
            if i >= len(xs):
                return [(None, xt), old]
            d = xs[i]
        elif d == -1:
            if unknown_at is not None:
                return [(None, xt), old]
            unknown_at = i
        elif d < -1:
            return [(None, xt), old]
        new.append(int(d))
    known = _prod(d for d in new if d != -1)
    if unknown_at is not None:
        if known == 0 or total % known:
            return [(None, xt), old]
        new[unknown_at] = total // known
    elif known != total:
        return [(None, xt), old]
    return [(tuple(new), xt), old]


(OPERATOR_SCHEMA("Reshape").NumInputs(1, 2).NumOutputs(2).AllowInplace({(0, 0)})
 .TensorInferenceFunction(_reshape_inference)
 .Arg("shape", "new shape; one dim may be -1 (inferred), 0 keeps the input's dim")
 .Input(0, "data", "input").Input(1, "new_shape", "optional 1-D new shape (instead of the "
                                                   "argument)")
 .Output(0, "reshaped", "the data with the new shape")
 .Output(1, "old_shape", "int64 shape of the input, for the gradient")
 .SetDoc("Reshape a tensor; also outputs its old shape so the gradient can restore it."))


@register_gradient("Reshape")
class GetReshapeGradient(GradientMakerBase):
    """Reshape(dY, old_shape) -> (dX, _dX_dims), without the forward ``shape`` argument."""

    def GetGradientDefs(self) -> list:
        dx = self.GI(0)
        return self.SingleGradientDef("Reshape", "", [self.GO(0), self.O(1)],
                                      [dx, "_" + dx + "_dims"])

    def CopyArguments(self) -> bool:
        return False


#: The forward types declared here, for tests and documentation.
FORWARD_TYPES = ["Conv", "MaxPool", "AveragePool", "Softmax", "LabelCrossEntropy", "Flatten",
                 "Dropout", "LRN", "Concat", "Split", "Reshape"]
