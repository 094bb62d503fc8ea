"""Filler ops: ConstantFill and the GivenTensor*Fill family that legacy init nets are made of.

A filler's shape comes from its ``shape`` argument, or from its optional input (its shape, or its
values with ``input_as_shape``), plus ``extra_shape``. Fillers have no gradient.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from c2lite.errors import EnforceError
from c2lite.operator import Operator
from c2lite.registry import register_cpu, register_cpu_cuda
from c2lite.schema import OPERATOR_SCHEMA

#: TensorProto.DataType -> numpy dtype (STRING is an object array of bytes/str).
DATA_TYPES = {1: np.float32, 2: np.int32, 3: np.uint8, 4: object, 5: np.bool_, 6: np.uint8,
              7: np.int8, 8: np.uint16, 9: np.int16, 10: np.int64, 12: np.float16,
              13: np.float64}


def _filler_schema(name: str, doc: str) -> None:
    (OPERATOR_SCHEMA(name).NumInputs(0, 1).NumOutputs(1).AllowInplace({(0, 0)})
     .TensorInferenceFunction(_fill_shape_inference)
     .Arg("shape", "output shape (without an input)")
     .Arg("extra_shape", "dims appended to the input's shape")
     .Arg("input_as_shape", "read the shape from the input's values")
     .Output(0, "output", "the filled tensor").SetDoc(doc))


def _fill_shape_inference(op: Any, inputs: list) -> list:
    args = {a.name: a for a in op.arg}
    if "shape" in args and not op.input:
        return [(tuple(args["shape"].ints), None)]
    if op.input and "input_as_shape" not in args and inputs and inputs[0][0] is not None:
        extra = tuple(args["extra_shape"].ints) if "extra_shape" in args else ()
        return [(tuple(inputs[0][0]) + extra, None)]
    return [(None, None)]


class _Filler(Operator):
    """Shared shape logic; subclasses produce the values."""

    def setup(self) -> None:
        self.shape = [int(d) for d in self.repeated_arg("shape")]
        self.extra_shape = [int(d) for d in self.repeated_arg("extra_shape")]
        self.input_as_shape = self.arg("input_as_shape", False)
        if self.inputs and self.has_arg("shape"):
            raise EnforceError("Cannot set the shape argument and pass in an input at the "
                               "same time")
        if any(d < 0 for d in self.shape + self.extra_shape):
            raise EnforceError(f"{self.type}: negative dimension in shape {self.shape}")

    def out_shape(self, inputs: tuple) -> tuple:
        if not inputs:
            return tuple(self.shape)
        (x,) = inputs
        if self.input_as_shape:
            dims = np.asarray(x).reshape(-1)
            if dims.dtype.kind not in "iu" or (dims < 0).any():
                raise EnforceError("input_as_shape needs a 1-D tensor of non-negative integers",
                                   blob=self.inputs[0])
            return tuple(int(d) for d in dims) + tuple(self.extra_shape)
        return tuple(x.shape) + tuple(self.extra_shape)


_filler_schema("ConstantFill", "Fill a tensor with a constant `value` (dtype from `dtype` or "
               "inferred from the value: float -> float32, int -> int64, bool, string).")


@register_cpu_cuda("ConstantFill")
class ConstantFill(_Filler):
    def setup(self) -> None:
        super().setup()
        proto = self._args.get("value")
        if self.has_arg("dtype"):
            code = self.arg("dtype", 1)
            if code not in DATA_TYPES:
                raise EnforceError(f"ConstantFill: unsupported dtype {code}")
            self.dtype = DATA_TYPES[code]
        elif proto is not None and proto.HasField("i"):
            self.dtype = np.int64
        elif proto is not None and proto.HasField("s"):
            self.dtype = object
        else:
            self.dtype = np.float32
        value = self.arg("value", 0.0) if proto is not None else 0
        if self.dtype is object:
            self.value = value
        else:
            try:
                self.value = np.asarray(value).astype(self.dtype)
            except (TypeError, ValueError) as exc:
                raise EnforceError(f"ConstantFill: value {value!r} does not fit dtype "
                                   f"{np.dtype(self.dtype).name}: {exc}") from None

    def compute(self, *inputs: Any) -> Any:
        xp = self.xp
        if self.dtype is object:
            out = np.empty(self.out_shape(inputs), dtype=object)
            out.fill(self.value)
            return out
        return xp.full(self.out_shape(inputs), self.value, dtype=self.dtype)


class _GivenTensorFill(_Filler):
    """Values from the ``values`` argument, reshaped to the output shape."""
    dtype: Any = np.float32

    def setup(self) -> None:
        super().setup()
        values = self.repeated_arg("values")
        if self.dtype is object:
            self.values = np.array([v.decode() if isinstance(v, bytes) else v for v in values],
                                   dtype=object)
        else:
            self.values = np.asarray(values, dtype=self.dtype)
        if not self.inputs:
            expected = int(np.prod(self.shape, dtype=np.int64))
            if expected != self.values.size:
                raise EnforceError(f"{self.type}: shape {self.shape} needs {expected} values "
                                   f"but 'values' holds {self.values.size}")

    def compute(self, *inputs: Any) -> Any:
        shape = self.out_shape(inputs)
        if int(np.prod(shape, dtype=np.int64)) != self.values.size:
            raise EnforceError(f"{self.type}: shape {list(shape)} needs "
                               f"{int(np.prod(shape))} values but 'values' holds "
                               f"{self.values.size}")
        values = self.values.reshape(shape)
        return values.copy() if self.dtype is object else self.xp.asarray(values)


def _given_fill(name: str, dtype: Any) -> type:
    _filler_schema(name, f"Fill a tensor of dtype {np.dtype(dtype).name} from the `values` "
                         "argument, reshaped to `shape`.")
    cls = type(name, (_GivenTensorFill,), {"dtype": dtype, "__doc__": f"{name} kernel."})
    register = register_cpu if dtype is object else register_cpu_cuda
    return register(name)(cls)


GivenTensorFill = _given_fill("GivenTensorFill", np.float32)
GivenTensorDoubleFill = _given_fill("GivenTensorDoubleFill", np.float64)
GivenTensorIntFill = _given_fill("GivenTensorIntFill", np.int32)
GivenTensorInt64Fill = _given_fill("GivenTensorInt64Fill", np.int64)
GivenTensorInt16Fill = _given_fill("GivenTensorInt16Fill", np.int16)
GivenTensorBoolFill = _given_fill("GivenTensorBoolFill", np.bool_)
GivenTensorStringFill = _given_fill("GivenTensorStringFill", object)

FILLERS = ["ConstantFill", "GivenTensorFill", "GivenTensorDoubleFill", "GivenTensorIntFill",
           "GivenTensorInt64Fill", "GivenTensorInt16Fill", "GivenTensorBoolFill",
           "GivenTensorStringFill"]


# ---------------------------------------------------------------------------------------------
# gradient: fillers produce constants, so nothing flows back through them.
# ---------------------------------------------------------------------------------------------
from c2lite.gradient import NO_GRADIENT  # noqa: E402

for _filler in FILLERS:
    NO_GRADIENT(_filler)
