"""The ops a plain SGD training loop is written with: WeightedSum, Scale and Iter.

A legacy SGD step is ``WeightedSum([param, ONE, grad, LR], param)``: param = 1·param + LR·grad,
updated in place (input 0 -> output 0), with LR negative. ``Iter`` counts iterations in an
int64 blob updated in place.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from c2lite.errors import EnforceError
from c2lite.gradient import GradientMakerBase, NO_GRADIENT, register_gradient
from c2lite.operator import Operator
from c2lite.registry import register_cpu, register_cpu_cuda
from c2lite.schema import OPERATOR_SCHEMA

FLOAT_TYPES = (np.float16, np.float32, np.float64)
INT64_MAX = np.iinfo(np.int64).max


def _weight(op: Operator, w: Any, idx: int, dtype: Any) -> Any:
    """The one-element weight input ``idx`` as a 0-d array of ``dtype``."""
    blob = op.inputs[idx]
    if w.size != 1:
        raise EnforceError(f"{op.type}: weight {blob} must hold exactly one element, got shape "
                           f"{list(w.shape)}", blob=blob)
    if w.dtype.kind != "f":
        raise EnforceError(f"{op.type}: weight {blob} has dtype {w.dtype}; weights must be "
                           "floating point", blob=blob)
    return w.reshape(()).astype(dtype)


# -- WeightedSum --------------------------------------------------------------------------------
(OPERATOR_SCHEMA("WeightedSum").NumInputs(lambda n: n > 0 and n % 2 == 0).NumOutputs(1)
 .AllowInplace({(0, 0)}).IdenticalTypeAndShapeOfInput(0)
 .Input(0, "X_0", "first tensor; the output takes its shape and dtype")
 .Input(1, "weight_0", "one-element float weight of X_0")
 .Output(0, "output", "sum of weight_i * X_i (may be X_0 in place, no other input)")
 .SetDoc("Y = sum_i weight_i * X_i over the pairs (X_0, weight_0, X_1, weight_1, ...). Every "
         "X_i must hold as many elements as X_0 and share its dtype; only X_0 may be updated "
         "in place."))

(OPERATOR_SCHEMA("WeightedSumGradient").NumInputs(lambda n: n > 0 and n % 2 == 1)
 .NumOutputs(1, 2**31 - 1)
 .Arg("grad_on_w", "also output the gradients of the weights (default false)")
 .Input(0, "dY", "gradient of the output").Input(1, "X_0", "forward input X_0")
 .Input(2, "weight_0", "forward weight_0")
 .Output(0, "dX_0", "weight_0 * dY; one dX_i per pair, then (with grad_on_w) one dw_i each")
 .SetDoc("Gradient of WeightedSum: dX_i = weight_i * dY and, with grad_on_w, "
         "dweight_i = <dY, X_i>."))


@register_cpu_cuda("WeightedSum")
class WeightedSum(Operator):
    float_types = FLOAT_TYPES

    def compute(self, *inputs: Any) -> Any:
        x0 = inputs[0]
        self.check_float(x0, 0)
        y = x0 * _weight(self, inputs[1], 1, x0.dtype)
        for i in range(2, len(inputs), 2):
            xi = inputs[i]
            if xi.dtype != x0.dtype:
                raise EnforceError(f"WeightedSum: input {self.inputs[i]} has dtype {xi.dtype} "
                                   f"but {self.inputs[0]} has {x0.dtype}", blob=self.inputs[i])
            if xi.size != x0.size:
                raise EnforceError(f"WeightedSum: input {self.inputs[i]} has shape "
                                   f"{list(xi.shape)} ({xi.size} elements) but "
                                   f"{self.inputs[0]} has {list(x0.shape)} ({x0.size})",
                                   blob=self.inputs[i])
            y += xi.reshape(x0.shape) * _weight(self, inputs[i + 1], i + 1, x0.dtype)
        return y


@register_cpu_cuda("WeightedSumGradient")
class WeightedSumGradient(Operator):
    float_types = FLOAT_TYPES

    def setup(self) -> None:
        self.grad_on_w = self.arg("grad_on_w", False)
        pairs = (len(self.inputs) - 1) // 2
        expected = 2 * pairs if self.grad_on_w else pairs
        if len(self.outputs) != expected:
            raise EnforceError(f"WeightedSumGradient with {pairs} (X, weight) pairs and "
                               f"grad_on_w={int(self.grad_on_w)} needs {expected} outputs, got "
                               f"{len(self.outputs)}")

    def compute(self, dy: Any, *pairs: Any) -> Any:
        self.check_float(dy, 0)
        xp = self.xp
        dxs, dws = [], []
        for j in range(0, len(pairs), 2):
            x, w = pairs[j], pairs[j + 1]
            if x.size != dy.size:
                raise EnforceError(f"WeightedSumGradient: input {self.inputs[j + 1]} has "
                                   f"{x.size} elements but the gradient {self.inputs[0]} has "
                                   f"{dy.size}", blob=self.inputs[j + 1])
            dxs.append((dy * _weight(self, w, j + 2, dy.dtype)).reshape(x.shape))
            if self.grad_on_w:
                dot = xp.sum(dy.reshape(-1) * x.reshape(-1).astype(dy.dtype))
                dws.append(dot.astype(w.dtype).reshape(w.shape))
        return dxs + dws


@register_gradient("WeightedSum")
class GetWeightedSumGradient(GradientMakerBase):
    """WeightedSumGradient(dY, X_0, w_0, X_1, w_1, ...) -> (dX_0, dX_1, ..., [dw_0, ...])."""

    def GetGradientDefs(self) -> list:
        grad_on_w = False
        for a in self.def_.arg:
            if a.name == "grad_on_w":
                grad_on_w = bool(a.i)
        n = len(self.def_.input)
        inputs, outputs = [self.GO(0)], []
        for i in range(0, n, 2):
            inputs += [self.I(i), self.I(i + 1)]
            outputs.append(self.GI(i))
        if grad_on_w:
            outputs += [self.GI(i + 1) for i in range(0, n, 2)]
        return self.SingleGradientDef("WeightedSumGradient", "", inputs, outputs)


# -- Scale --------------------------------------------------------------------------------------
(OPERATOR_SCHEMA("Scale").NumInputs(1).NumOutputs(1).AllowInplace({(0, 0)})
 .IdenticalTypeAndShape()
 .Arg("scale", "the multiplier (float, default 1.0)")
 .Input(0, "input", "float tensor").Output(0, "output", "input * scale (may be in place)")
 .SetDoc("Multiply a tensor by the constant `scale`."))


@register_cpu_cuda("Scale")
class Scale(Operator):
    float_types = FLOAT_TYPES

    def setup(self) -> None:
        self.scale = self.arg("scale", 1.0)

    def compute(self, x: Any) -> Any:
        self.check_float(x, 0)
        return x * x.dtype.type(self.scale)


@register_gradient("Scale")
class GetScaleGradient(GradientMakerBase):
    """Scale(dY) -> dX; the forward ``scale`` argument is copied by the framework."""

    def GetGradientDefs(self) -> list:
        return self.SingleGradientDef("Scale", "", [self.GO(0)], [self.GI(0)])


# -- Iter ---------------------------------------------------------------------------------------
(OPERATOR_SCHEMA("Iter").NumInputs(0, 1).NumOutputs(1).EnforceInplace({(0, 0)})
 .TensorInferenceFunction(lambda op, ins: [((1,), "int64")])
 .Input(0, "iter", "optional int64 one-element counter (the same blob as the output)")
 .Output(0, "iter", "the counter plus one")
 .SetDoc("Increment an int64 iteration counter in place. Without an input, the output blob "
         "is read instead and starts at 0 when it has never been written, so the first run "
         "stores 1."))


@register_cpu("Iter")
class Iter(Operator):
    def compute(self, *inputs: Any) -> Any:
        blob = self.outputs[0]
        if inputs:
            current = inputs[0]
        else:
            current = self.ws.get_blob(blob)
            if current is None:
                current = np.zeros(1, dtype=np.int64)
        if not isinstance(current, np.ndarray) or current.dtype != np.int64:
            kind = getattr(current, "dtype", type(current).__name__)
            raise EnforceError(f"Iter: counter {blob} must be an int64 CPU tensor, got {kind}",
                               blob=blob)
        if current.size != 1:
            raise EnforceError(f"Iter: counter {blob} exists but holds {current.size} elements "
                               "instead of 1", blob=blob)
        value = int(current.reshape(-1)[0])
        if value < 0:
            raise EnforceError(f"Iter: previous iteration number {value} is negative", blob=blob)
        if value >= INT64_MAX:
            raise EnforceError("Iter: the counter would overflow", blob=blob)
        return np.full(current.shape, value + 1, dtype=np.int64)


NO_GRADIENT("Iter")
