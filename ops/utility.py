"""Utility ops the gradient machinery relies on: Sum (accumulation), Copy, StopGradient, and
the explicit cross-device copies (kernels for CUDA live in ``c2lite.ops.cuda``)."""
from __future__ import annotations

from typing import Any

from c2lite.errors import EnforceError
from c2lite.operator import Operator
from c2lite.device import to_device, to_host
from c2lite.registry import register_cpu, register_cpu_cuda, register_cuda
from c2lite.schema import OPERATOR_SCHEMA

(OPERATOR_SCHEMA("Sum").NumInputs(1, 2**31 - 1).NumOutputs(1).AllowInplace({(0, 0)})
 .IdenticalTypeAndShapeOfInput(0)
 .Input(0, "data_0", "first of the tensors to add; all must share shape and dtype")
 .Output(0, "sum", "element-wise sum (may be in-place on input 0)")
 .SetDoc("Element-wise sum of all inputs. Used to accumulate gradients of blobs read by "
         "several ops."))


@register_cpu_cuda("Sum")
class Sum(Operator):
    def compute(self, *xs: Any) -> Any:
        first = xs[0]
        for name, x in zip(self.inputs[1:], xs[1:]):
            if x.shape != first.shape or x.dtype != first.dtype:
                raise EnforceError(f"Sum: input {name} is {x.dtype}{list(x.shape)} but input "
                                   f"{self.inputs[0]} is {first.dtype}{list(first.shape)}",
                                   blob=name)
        if len(xs) == 1:
            return first.copy()
        out = first + xs[1]
        for x in xs[2:]:
            out += x
        return out


(OPERATOR_SCHEMA("Copy").NumInputs(1).NumOutputs(1).AllowInplace({(0, 0)})
 .IdenticalTypeAndShape()
 .Input(0, "input", "tensor to copy").Output(0, "output", "a copy on the same device")
 .SetDoc("Copy a tensor within one device."))


@register_cpu_cuda("Copy")
class Copy(Operator):
    def compute(self, x: Any) -> Any:
        return x.copy()


(OPERATOR_SCHEMA("StopGradient").NumInputs(1).NumOutputs(1).AllowInplace({(0, 0)})
 .IdenticalTypeAndShape()
 .Input(0, "input", "tensor").Output(0, "output", "the same values, with no gradient")
 .SetDoc("Pass the input through unchanged; the backward pass stops here."))


@register_cpu_cuda("StopGradient")
class StopGradient(Operator):
    def compute(self, x: Any) -> Any:
        return x


for _name, _doc in [("CopyCPUToGPU", "Copy a CPU tensor to the op's CUDA device."),
                    ("CopyGPUToCPU", "Copy a CUDA tensor to the host."),
                    ("CopyFromCPUInput", "Copy a CPU input to the op's device."),
                    ("EnsureCPUOutput", "Make sure the output is a CPU tensor (copy if needed).")]:
    (OPERATOR_SCHEMA(_name).NumInputs(1).NumOutputs(1).InputsCanCrossDevices()
     .IdenticalTypeAndShape().Input(0, "input", "tensor").Output(0, "output", "the copy")
     .SetDoc(_doc))


@register_cpu("EnsureCPUOutput")
@register_cpu("CopyFromCPUInput")
@register_cuda("CopyGPUToCPU")
@register_cuda("EnsureCPUOutput")
class ToHost(Operator):
    """Any input (CPU or CUDA) comes back as a host (NumPy) copy."""

    def compute(self, x: Any) -> Any:
        return to_host(x)


@register_cuda("CopyCPUToGPU")
@register_cuda("CopyFromCPUInput")
class ToDevice(Operator):
    """A host (or other-GPU) tensor copied onto this op's CUDA device."""

    def compute(self, x: Any) -> Any:
        return to_device(x, self.device)


# ---------------------------------------------------------------------------------------------
# gradient
# ---------------------------------------------------------------------------------------------
from c2lite.gradient import NO_GRADIENT, GradientMakerBase, register_gradient  # noqa: E402

NO_GRADIENT("StopGradient")


@register_gradient("Sum")
class GetSumGradient(GradientMakerBase):
    """d(sum)/d(x_i) = 1: every input's gradient is the output gradient itself (no op)."""

    def GetGradientDefs(self) -> list:
        for i in range(len(self.def_.input)):
            self.SetDense(i, self.GO(0))
        return []


@register_gradient("Copy")
class GetCopyGradient(GradientMakerBase):
    """Copy the output gradient back. (Caffe2 emitted CopyOnDeviceLike(GO, X), which c2lite
    does not have; a same-device Copy computes the same thing.)"""

    def GetGradientDefs(self) -> list:
        return self.SingleGradientDef("Copy", "", [self.GO(0)], [self.GI(0)])


def _inverse_copy_maker(op_type: str, inverse: str) -> None:
    """The gradient of a cross-device copy is the copy in the other direction (dense, or
    indices and values separately for a sparse gradient), run on the same device option."""
    class _Maker(GradientMakerBase):
        def GetGradientDefs(self) -> list:
            if self.GradOut(0).IsDense():
                return self.SingleGradientDef(inverse, "", [self.GO(0)], [self.GI(0)])
            return (self.SingleGradientDef(inverse, "", [self.GO_I(0)], [self.GI_I(0)])
                    + self.SingleGradientDef(inverse, "", [self.GO_V(0)], [self.GI_V(0)]))

    _Maker.__name__ = _Maker.__qualname__ = f"Get{op_type}Gradient"
    register_gradient(op_type)(_Maker)


_inverse_copy_maker("CopyCPUToGPU", "CopyGPUToCPU")
_inverse_copy_maker("CopyGPUToCPU", "CopyCPUToGPU")
# Not in Caffe2 (it registered no gradient for these two) and not in the serialized op tests:
# EnsureCPUOutput moves X from the op's device to the host, so its gradient moves the host
# gradient back (CopyFromCPUInput), and vice versa.
_inverse_copy_maker("EnsureCPUOutput", "CopyFromCPUInput")
_inverse_copy_maker("CopyFromCPUInput", "EnsureCPUOutput")
