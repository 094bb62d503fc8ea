"""Fully connected layers: FC, FCTransposed and their gradients.

X is viewed as a matrix (M, K) by splitting its dims at ``axis``; W is viewed as (N, K) for FC
(split at ``axis_w``) or (K, N) for FCTransposed. Then Y = X·Wᵀ + b (resp. X·W + b) with shape
``X.shape[:axis] + (N,)``. The gradient op takes (X, W, dY) and writes dW, db and, when it has
a third output, dX.
"""
from __future__ import annotations

from typing import Any

from c2lite.errors import EnforceError, GradientError
from c2lite.gradient import GradientMakerBase, register_gradient
from c2lite.operator import Operator
from c2lite.registry import register_cpu_cuda
from c2lite.schema import OPERATOR_SCHEMA



def _prod(dims: Any) -> int:
    out = 1
    for d in dims:
        out *= int(d)
    return out


def canonical_axis(axis: int, ndim: int, what: str, blob: str) -> int:
    """``axis`` in [-ndim, ndim) made non-negative, else an EnforceError naming ``blob``."""
    if not -ndim <= axis < ndim:
        raise EnforceError(f"{what} {axis} is out of range for a tensor of {ndim} dims "
                           f"(must be in [{-ndim}, {ndim}))", blob=blob)
    return axis % ndim


def _op_int_arg(op: Any, name: str, default: int) -> int:
    for a in op.arg:
        if a.name == name and a.HasField("i"):
            return int(a.i)
    return default


class _FCBase(Operator):
    """Argument reading and the (M, K) / (N, K) views shared by the four kernels."""

    transposed = False  # True: W is (K, N)

    def setup(self) -> None:
        self.axis = self.arg("axis", 1)
        self.axis_w = self.arg("axis_w", 1)
        # float16_compute only picks an fp16 GEMM on GPUs; results are the same here.

    def views(self, x: Any, w: Any) -> tuple:
        """(M, K, N) and the matrix views X2 (M, K), W2 ((N, K), or (K, N) if transposed)."""
        xa = canonical_axis(self.axis, x.ndim, f"{self.type}: axis", self.inputs[0])
        wa = canonical_axis(self.axis_w, w.ndim, f"{self.type}: axis_w", self.inputs[1])
        m, k = _prod(x.shape[:xa]), _prod(x.shape[xa:])
        lead, tail = _prod(w.shape[:wa]), _prod(w.shape[wa:])
        n, k_w = (tail, lead) if self.transposed else (lead, tail)
        if k_w != k:
            layout = "(K, N)" if self.transposed else "(N, K)"
            raise EnforceError(
                f"{self.type}: dimension mismatch: X {list(x.shape)} gives K={k} at axis "
                f"{self.axis}, but W {list(w.shape)} viewed as {layout} at axis_w "
                f"{self.axis_w} gives K={k_w}", blob=self.inputs[1])
        return m, k, n, x.reshape(m, k), w.reshape(lead, tail), xa


def _fc_inference(op: Any, inputs: list, transposed: bool) -> list:
    (xs, xt), (ws, _) = inputs[0], inputs[1]
    if xs is None or ws is None:
        return [(None, xt)]
    try:
        xa = canonical_axis(_op_int_arg(op, "axis", 1), len(xs), "axis", "")
        wa = canonical_axis(_op_int_arg(op, "axis_w", 1), len(ws), "axis_w", "")
    except EnforceError:
        return [(None, xt)]
    n = _prod(ws[wa:]) if transposed else _prod(ws[:wa])
    return [(tuple(xs[:xa]) + (n,), xt)]


def _fc_grad_inference(op: Any, inputs: list, transposed: bool) -> list:
    (xs, xt), (ws, wt) = inputs[0], inputs[1]
    n = None
    if ws is not None:
        try:
            wa = canonical_axis(_op_int_arg(op, "axis_w", 1), len(ws), "axis_w", "")
            n = _prod(ws[wa:]) if transposed else _prod(ws[:wa])
        except EnforceError:
            pass
    out = [(ws, wt), ((n,) if n is not None else None, wt), (xs, xt)]
    return out[: len(op.output)]


for _name, _transposed, _wdoc in [
        ("FC", False, "weights viewed as (N, K): dims before axis_w give N"),
        ("FCTransposed", True, "weights viewed as (K, N): dims from axis_w on give N")]:
    (OPERATOR_SCHEMA(_name).NumInputs(3).NumOutputs(1)
     .TensorInferenceFunction(lambda op, ins, t=_transposed: _fc_inference(op, ins, t))
     .Arg("axis", "X is flattened to (M, K) at this axis (default 1; negative counts back)")
     .Arg("axis_w", "W is flattened to a matrix at this axis (default 1)")
     .Arg("float16_compute", "GPU-only fp16 GEMM switch; ignored here")
     .Input(0, "X", "input, float32 or float64, at least axis+1 dims")
     .Input(1, "W", _wdoc)
     .Input(2, "b", "1-D bias of N elements")
     .Output(0, "Y", "X.shape[:axis] + (N,)")
     .SetDoc(f"{_name}: Y = X·{'W' if _transposed else 'Wᵀ'} + b with X flattened to a "
             "matrix at `axis` and W at `axis_w`."))
    (OPERATOR_SCHEMA(_name + "Gradient").NumInputs(3).NumOutputs(2, 3)
     .TensorInferenceFunction(lambda op, ins, t=_transposed: _fc_grad_inference(op, ins, t))
     .Arg("axis", "as in the forward op").Arg("axis_w", "as in the forward op")
     .Input(0, "X", "forward input").Input(1, "W", "forward weights")
     .Input(2, "dY", "gradient of the output")
     .Output(0, "dW", "gradient of W (W's shape)")
     .Output(1, "db", "gradient of b: dY summed over the M rows")
     .Output(2, "dX", "optional gradient of X (X's shape)")
     .SetDoc(f"Gradient of {_name}."))


@register_cpu_cuda("FC")
class FC(_FCBase):
    def compute(self, x: Any, w: Any, b: Any) -> Any:
        self.check_float(x, 0)
        self.check_float(w, 1, x)
        self.check_float(b, 2, x)
        m, k, n, x2, w2, xa = self.views(x, w)
        if b.ndim != 1 or b.shape[0] != n:
            raise EnforceError(f"{self.type}: bias must be 1-D with N={n} elements, got shape "
                               f"{list(b.shape)}", blob=self.inputs[2])
        y = x2 @ (w2 if self.transposed else w2.T)
        y = y + b
        return y.reshape(tuple(x.shape[:xa]) + (n,))


@register_cpu_cuda("FCTransposed")
class FCTransposed(FC):
    transposed = True


@register_cpu_cuda("FCGradient")
class FCGradient(_FCBase):
    def compute(self, x: Any, w: Any, dy: Any) -> Any:
        self.check_float(x, 0)
        self.check_float(w, 1, x)
        self.check_float(dy, 2, x)
        m, k, n, x2, w2, _ = self.views(x, w)
        if dy.size != m * n:
            raise EnforceError(f"{self.type}: output gradient has shape {list(dy.shape)} "
                               f"({dy.size} elements) but the forward output is M={m} x N={n}",
                               blob=self.inputs[2])
        dy2 = dy.reshape(m, n)
        dw = (x2.T @ dy2) if self.transposed else (dy2.T @ x2)
        db = dy2.sum(axis=0)
        outs = [dw.reshape(w.shape), db]
        if len(self.outputs) == 3:
            dx = dy2 @ (w2.T if self.transposed else w2)
            outs.append(dx.reshape(x.shape))
        return outs


@register_cpu_cuda("FCTransposedGradient")
class FCTransposedGradient(FCGradient):
    transposed = True


class _GetFCGradient(GradientMakerBase):
    """(X, W, dY) -> (dW, db, dX), the output order Caffe2 uses."""

    def GetGradientDefs(self) -> list:
        if len(self.def_.input) != 3:
            raise GradientError(f"{self.def_.type} gradient needs exactly 3 inputs (X, W, b), "
                               f"got {len(self.def_.input)}")
        return self.SingleGradientDef(self.def_.type + "Gradient", "",
                                      [self.I(0), self.I(1), self.GO(0)],
                                      [self.GI(1), self.GI(2), self.GI(0)])


register_gradient("FC")(_GetFCGradient)
register_gradient("FCTransposed")(_GetFCGradient)
