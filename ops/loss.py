"""AveragedLoss: the mean of every element of X as a 0-d (shape ()) tensor, and its gradient.

AveragedLossGradient(X, dY) spreads the scalar dY evenly: dX = dY / X.size everywhere.
An empty X averages to 0 (no division by zero).
"""
from __future__ import annotations

from typing import Any

from c2lite.errors import EnforceError
from c2lite.gradient import GradientMakerBase, register_gradient
from c2lite.operator import Operator
from c2lite.registry import register_cpu_cuda
from c2lite.schema import OPERATOR_SCHEMA


(OPERATOR_SCHEMA("AveragedLoss").NumInputs(1).NumOutputs(1)
 .TensorInferenceFunction(lambda op, ins: [((), ins[0][1] or "float32")])
 .Input(0, "X", "float tensor of any shape (typically per-example losses)")
 .Output(0, "loss", "0-d tensor: the mean of all elements of X (0 when X is empty)")
 .SetDoc("Average all elements of X into a scalar loss."))

(OPERATOR_SCHEMA("AveragedLossGradient").NumInputs(2).NumOutputs(1)
 .IdenticalTypeAndShapeOfInput(0)
 .Input(0, "X", "forward input").Input(1, "dY", "one-element gradient of the loss")
 .Output(0, "dX", "X's shape, every element dY / X.size")
 .SetDoc("Gradient of AveragedLoss."))


@register_cpu_cuda("AveragedLoss")
class AveragedLoss(Operator):
    def compute(self, x: Any) -> Any:
        self.check_float(x, 0)
        if x.size == 0:
            return self.xp.zeros((), dtype=x.dtype)
        return (x.sum(dtype=x.dtype) / x.dtype.type(x.size)).reshape(())


@register_cpu_cuda("AveragedLossGradient")
class AveragedLossGradient(Operator):
    def compute(self, x: Any, dy: Any) -> Any:
        self.check_float(x, 0)
        self.check_float(dy, 1)
        if dy.size != 1:
            raise EnforceError(f"{self.type}: the loss gradient must hold exactly one element, "
                               f"got shape {list(dy.shape)}", blob=self.inputs[1])
        scale = dy.reshape(()).astype(x.dtype) / x.dtype.type(max(x.size, 1))
        return self.xp.zeros(x.shape, dtype=x.dtype) + scale


@register_gradient("AveragedLoss")
class GetAveragedLossGradient(GradientMakerBase):
    def GetGradientDefs(self) -> list:
        return self.SingleGradientDef("AveragedLossGradient", "",
                                      [self.I(0), self.GO(0)], [self.GI(0)])
