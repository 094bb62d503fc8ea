"""Element-wise activations: Relu and Sigmoid with their gradients.

Both gradients are computed from the forward *output* Y (ReluGradient(Y, dY),
SigmoidGradient(Y, dY)), so the forward op may run in place (X -> X) and its gradient may run
in place on dY (dY -> dX).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from c2lite.errors import EnforceError
from c2lite.gradient import GradientMakerBase, register_gradient
from c2lite.operator import Operator
from c2lite.registry import register_cpu_cuda
from c2lite.schema import OPERATOR_SCHEMA

FLOAT_TYPES = (np.float16, np.float32, np.float64)


def _forward_schema(name: str, formula: str) -> None:
    (OPERATOR_SCHEMA(name).NumInputs(1).NumOutputs(1).AllowInplace({(0, 0)})
     .IdenticalTypeAndShape()
     .Input(0, "X", "float tensor").Output(0, "Y", f"{formula}, element-wise (may be X)")
     .SetDoc(f"{name}: Y = {formula} element-wise."))


def _gradient_schema(name: str, formula: str) -> None:
    (OPERATOR_SCHEMA(name + "Gradient").NumInputs(2).NumOutputs(1).AllowInplace({(1, 0)})
     .IdenticalTypeAndShapeOfInput(1)
     .Input(0, "Y", f"output of the forward {name}").Input(1, "dY", "gradient of Y")
     .Output(0, "dX", f"{formula} (may be dY)")
     .SetDoc(f"Gradient of {name}, computed from its output."))


class _Elementwise(Operator):
    float_types = FLOAT_TYPES

    def check_pair(self, y: Any, dy: Any) -> None:
        self.check_float(y, 0)
        self.check_float(dy, 1)
        if y.shape != dy.shape or y.dtype != dy.dtype:
            raise EnforceError(f"{self.type}: gradient {self.inputs[1]} is "
                               f"{dy.dtype}{list(dy.shape)} but output {self.inputs[0]} is "
                               f"{y.dtype}{list(y.shape)}", blob=self.inputs[1])


_forward_schema("Relu", "max(X, 0)")
_gradient_schema("Relu", "dY where Y > 0, else 0")


@register_cpu_cuda("Relu")
class Relu(_Elementwise):
    def compute(self, x: Any) -> Any:
        self.check_float(x, 0)
        return self.xp.maximum(x, x.dtype.type(0))


@register_cpu_cuda("ReluGradient")
class ReluGradient(_Elementwise):
    def compute(self, y: Any, dy: Any) -> Any:
        self.check_pair(y, dy)
        return self.xp.where(y > 0, dy, dy.dtype.type(0))


_forward_schema("Sigmoid", "1 / (1 + exp(-X))")
_gradient_schema("Sigmoid", "dY * Y * (1 - Y)")


@register_cpu_cuda("Sigmoid")
class Sigmoid(_Elementwise):
    def compute(self, x: Any) -> Any:
        self.check_float(x, 0)
        xp = self.xp
        one = x.dtype.type(1)
        z = xp.exp(-xp.abs(x))  # in (0, 1]: never overflows
        return xp.where(x >= 0, one / (one + z), z / (one + z)).astype(x.dtype, copy=False)


@register_cpu_cuda("SigmoidGradient")
class SigmoidGradient(_Elementwise):
    def compute(self, y: Any, dy: Any) -> Any:
        self.check_pair(y, dy)
        return dy * y * (y.dtype.type(1) - y)


class _GetOutputBasedGradient(GradientMakerBase):
    """<Type>Gradient(Y, dY) -> dX."""

    def GetGradientDefs(self) -> list:
        return self.SingleGradientDef(self.def_.type + "Gradient", "",
                                      [self.O(0), self.GO(0)], [self.GI(0)])


register_gradient("Relu")(_GetOutputBasedGradient)
register_gradient("Sigmoid")(_GetOutputBasedGradient)
