"""PairWiseLoss / PairWiseLossGradient: pairwise ranking loss over sessions (reference §6).

Inside each session, every pair of items whose labels differ by at least FLT_EPSILON adds
softplus(score of the lower-labelled item - score of the higher-labelled one), with Caffe2's
cut-offs at +-ln(eps); Y[s] is the session's mean. The checks below run in Caffe2's order with
its messages; the kernels (``_rank_loss_cpu``) accumulate in float64 and never build an N x N
matrix for a large session.

Deliberate differences from Caffe2, each a clearer error or a wider accepted input:
lengths may be any integer dtype (Caffe2: int32 only) and must be non-negative (Caffe2 did
not check, and read out of bounds).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from c2lite.errors import EnforceError, enforce_eq
from c2lite.gradient import GradientMakerBase, register_gradient
from c2lite.ops._rank_loss_cpu import pairwise_loss_forward, pairwise_loss_gradient
from c2lite.operator import Operator
from c2lite.registry import register_cpu, register_cuda
from c2lite.schema import OPERATOR_SCHEMA

WHERE = "rank_loss_op.cc"

(OPERATOR_SCHEMA("PairWiseLoss").NumInputs(2, 3).NumOutputs(1)
 .Input(0, "X", "scores, float32 of shape (N,) or (N, 1); almost always the output of a "
        "scoring net")
 .Input(1, "label", "relevance labels, float32 of shape (N,) or (N, 1)")
 .Input(2, "lengths", "optional session sizes (S,), integers summing to N")
 .Output(0, "Y", "mean pairwise loss of each session, float32 (S,)")
 .SetDoc("Pairwise ranking loss (Sculley, Large Scale Learning to Rank): for every pair of "
         "items in a session with different labels, softplus(x_lower - x_higher), averaged "
         "per session."))

(OPERATOR_SCHEMA("PairWiseLossGradient").NumInputs(3, 4).NumOutputs(1)
 .Input(0, "X", "scores").Input(1, "label", "labels")
 .Input(2, "dY", "gradient of the per-session losses (S,)")
 .Input(3, "lengths", "optional session sizes")
 .Output(0, "dX", "gradient of the scores, shaped like X")
 .SetDoc("Gradient of PairWiseLoss with respect to X."))


def _require_dtype(x: Any, dtype: Any, blob: str) -> None:
    if x.dtype != dtype:
        raise EnforceError(f"Tensor type mismatch, caller expects elements to be "
                           f"{np.dtype(dtype).name} while tensor contains {x.dtype.name}",
                           blob=blob)


def check_lengths(lengths: Any, n: int, blob: str) -> Any:
    """Caffe2's lengths checks (ndim 1, integer, sum == N) plus non-negativity; int64 out."""
    enforce_eq(lengths.ndim, 1, "lengths.dim() == 1", where=WHERE, blob=blob)
    if lengths.dtype.kind not in "iu":
        raise EnforceError("Tensor type mismatch, caller expects elements to be int while "
                           f"tensor contains {lengths.dtype.name}", blob=blob)
    if lengths.shape[0] == 1:  # one session: no reductions needed
        smallest = largest = int(lengths[0])
    else:
        smallest = int(lengths.min()) if lengths.shape[0] else 0
        largest = int(lengths.max()) if lengths.shape[0] else 0
    if smallest < 0:
        bad = int(lengths.argmin())
        raise EnforceError(f"lengths must be non-negative, but lengths[{bad}] = "
                           f"{int(lengths[bad])}", blob=blob)
    if largest > n and lengths.shape[0] > 1:  # keeps the int64 sum from wrapping around
        bad = int(lengths.argmax())
        raise EnforceError(f"[enforce fail at {WHERE}] len_sum == N: lengths[{bad}] = "
                           f"{largest} alone exceeds N = {n}", blob=blob)
    lengths = lengths.astype(np.int64, copy=False)
    total = largest if lengths.shape[0] == 1 else int(lengths.sum())
    enforce_eq(total, n, "len_sum == N", where=WHERE, blob=blob)
    return lengths


def check_label(label: Any, n: int, blob: str) -> None:
    if not (label.ndim == 1 or (label.ndim == 2 and label.shape[1] == 1)):
        raise EnforceError(f"[enforce fail at {WHERE}] label.dim() == 1 || (label.dim() == 2 "
                           f"&& label.dim32(1) == 1). label has shape {list(label.shape)}",
                           blob=blob)
    enforce_eq(label.shape[0], n, "label.dim32(0) == N", where=WHERE, blob=blob)


@register_cpu("PairWiseLoss")
class PairWiseLoss(Operator):
    def compute(self, x: Any, label: Any, lengths: Optional[Any] = None) -> Any:
        n = x.shape[0] if x.ndim > 0 else 0
        if n == 0:
            return self.xp.zeros((0,), dtype=np.float32)
        names = self.inputs
        if lengths is not None:
            lengths = check_lengths(lengths, n, names[2])
        check_label(label, n, names[1])
        enforce_eq(1, x.size // n, "1 == D", where=WHERE, extra="Only supports one class",
                   blob=names[0])
        _require_dtype(x, np.float32, names[0])
        _require_dtype(label, np.float32, names[1])
        return self.kernel_forward(x.reshape(n), label.reshape(n), lengths)

    def kernel_forward(self, x: Any, label: Any, lengths: Optional[np.ndarray]) -> Any:
        return pairwise_loss_forward(x, label, lengths)


@register_cpu("PairWiseLossGradient")
class PairWiseLossGradient(Operator):
    def compute(self, x: Any, label: Any, dy: Any, lengths: Optional[Any] = None) -> Any:
        names = self.inputs
        n = x.shape[0] if x.ndim > 0 else 0
        enforce_eq(n, x.size, "N == X.size()", where=WHERE, blob=names[0])
        check_label(label, n, names[1])
        if n == 0:
            return self.xp.zeros(x.shape, dtype=np.float32)
        if lengths is not None:
            lengths = check_lengths(lengths, n, names[3])
        n_sessions = 1 if lengths is None else lengths.shape[0]
        enforce_eq(dy.ndim, 1, "dY.dim() == 1", where=WHERE, blob=names[2])
        enforce_eq(dy.shape[0], n_sessions, "dY.dim32(0) == len_size", where=WHERE,
                   blob=names[2])
        for value, blob in ((x, names[0]), (label, names[1]), (dy, names[2])):
            _require_dtype(value, np.float32, blob)
        dx = self.kernel_gradient(x.reshape(n), label.reshape(n), dy, lengths)
        return dx.reshape(x.shape)

    def kernel_gradient(self, x: Any, label: Any, dy: Any, lengths: Optional[np.ndarray]) -> Any:
        return pairwise_loss_gradient(x, label, dy, lengths)


# -- CUDA: the same checks (raised before any launch), deterministic RawKernels -----------------
@register_cuda("PairWiseLoss")
class PairWiseLossCUDA(PairWiseLoss):
    def kernel_forward(self, x: Any, label: Any, lengths: Optional[Any]) -> Any:
        from c2lite.ops._rank_loss_cuda import pairwise_loss_forward_cuda
        return pairwise_loss_forward_cuda(x, label, lengths)


@register_cuda("PairWiseLossGradient")
class PairWiseLossGradientCUDA(PairWiseLossGradient):
    def kernel_gradient(self, x: Any, label: Any, dy: Any, lengths: Optional[Any]) -> Any:
        from c2lite.ops._rank_loss_cuda import pairwise_loss_gradient_cuda
        return pairwise_loss_gradient_cuda(x, label, dy, lengths)


# -- gradient -----------------------------------------------------------------------------------
@register_gradient("PairWiseLoss")
class GetPairWiseLossGradient(GradientMakerBase):
    """PairWiseLossGradient(X, label, dY[, lengths]) -> dX: lengths moves to index 3."""

    def GetGradientDefs(self) -> list:
        inputs = [self.I(0), self.I(1), self.GO(0)]
        if len(self.Def().input) == 3:
            inputs.append(self.I(2))
        return self.SingleGradientDef("PairWiseLossGradient", "", inputs, [self.GI(0)])
