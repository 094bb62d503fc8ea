"""Operator: one instance per OperatorDef, bound to a workspace and a device.

A kernel subclass reads its arguments once in ``setup`` and implements ``compute(*inputs)``:
arrays in, arrays out, never mutating its inputs. ``run`` fetches the inputs, checks their
device, calls ``compute`` and only then writes every output, so a failing op leaves the
workspace exactly as it was.
"""
from __future__ import annotations

import functools

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from c2lite.device import CPU, CPU_DEVICE, Device, array_module, device_of_value, same_device
from c2lite.errors import EnforceError

if TYPE_CHECKING:  # pragma: no cover
    from c2lite.workspace import Workspace

_MISSING = object()


class UnsupportedOperatorFeature(EnforceError):
    """Raised from ``setup`` when this engine cannot handle the op; the next engine is tried."""


def _argument_value(arg: Any) -> Any:
    """The Python value of one Argument proto (single or repeated field)."""
    for field in ("f", "i", "s", "n", "t"):
        if arg.HasField(field):
            return getattr(arg, field)
    for field in ("floats", "ints", "strings", "nets", "tensors", "qtensors"):
        values = getattr(arg, field, ())
        if len(values):
            return list(values)
    return []


class Operator:
    """Base class of every kernel. Subclasses set ``setup`` and ``compute``."""

    #: Copied from the schema's InputsCanCrossDevices at creation (e.g. Copy ops).
    cross_device_inputs = False

    def __init__(self, op_def: Any, ws: "Workspace", device: Device, engine: str = "") -> None:
        self.op_def = op_def
        self.type: str = op_def.type
        self.name: str = op_def.name
        self.ws = ws
        self.device = device
        self.engine = engine
        self.inputs: list[str] = list(op_def.input)
        self.outputs: list[str] = list(op_def.output)
        self._args = {a.name: a for a in op_def.arg}
        for blob in self.inputs:
            if not ws.has_blob(blob):
                raise EnforceError(f"op {self.type}: Encountered a non-existing input blob: "
                                   f"{blob}", blob=blob)
        self.setup()
        for blob in self.outputs:
            ws.create_blob(blob)

    # -- hooks for kernels ------------------------------------------------------------------
    def setup(self) -> None:
        """Read arguments; raise EnforceError for bad ones (called once, at construction)."""

    def compute(self, *inputs: Any) -> Any:
        """Return the outputs: a sequence with one value per output (or a bare value for one)."""
        raise NotImplementedError(f"{type(self).__name__}.compute")

    @functools.cached_property
    def xp(self) -> Any:
        """The array module of this op's device (numpy or cupy), looked up once per op."""
        return array_module(self.device)

    #: Float dtypes ``check_float`` accepts; families that also take float16 widen it.
    float_types: tuple = (np.float32, np.float64)

    def check_float(self, value: Any, idx: int, like: Any = None) -> None:
        """Input ``idx`` must have one of ``float_types`` (and, if given, ``like``'s dtype)."""
        blob = self.inputs[idx]
        if value.dtype not in self.float_types:
            names = [np.dtype(t).name for t in self.float_types]
            listed = ", ".join(names[:-1]) + " and " + names[-1]
            raise EnforceError(f"{self.type}: input {blob} has dtype {value.dtype}; only "
                               f"{listed} are supported", blob=blob)
        if like is not None and value.dtype != like.dtype:
            raise EnforceError(f"{self.type}: input {blob} has dtype {value.dtype} but "
                               f"{self.inputs[0]} has {like.dtype}", blob=blob)

    # -- arguments (Caffe2's ArgumentHelper) ------------------------------------------------
    def has_arg(self, name: str) -> bool:
        return name in self._args

    def arg(self, name: str, default: Any = _MISSING) -> Any:
        """Single argument ``name``, converted to ``type(default)`` (int, float, bool, str)."""
        proto = self._args.get(name)
        if proto is None:
            if default is _MISSING:
                raise EnforceError(f"Argument '{name}' is required by {self.type}")
            return default
        value = _argument_value(proto)
        if default is _MISSING or default is None or isinstance(value, list):
            return value
        try:
            if isinstance(default, bool):
                return bool(value)
            if isinstance(default, int):
                if isinstance(value, float) and not value.is_integer():
                    raise TypeError
                return int(value)
            if isinstance(default, float):
                return float(value)
            if isinstance(default, str):
                return value.decode() if isinstance(value, bytes) else str(value)
        except (TypeError, ValueError):
            pass
        else:
            return value
        raise EnforceError(f"Argument '{name}' of {self.type} holds {value!r}, "
                           f"which is not a {type(default).__name__}")

    def repeated_arg(self, name: str, default: Sequence = ()) -> list:
        """Repeated argument ``name`` (ints, floats or strings), or ``default``."""
        proto = self._args.get(name)
        if proto is None:
            return list(default)
        value = _argument_value(proto)
        return value if isinstance(value, list) else [value]

    # -- running ----------------------------------------------------------------------------
    def fetch_inputs(self) -> list:
        """The input values, each checked to be written and on this op's device."""
        get = self.ws.get_blob
        values = [get(blob) for blob in self.inputs]
        on_cpu = self.device.type == CPU
        for blob, value in zip(self.inputs, values):
            if not (on_cpu and type(value) is np.ndarray):  # the common case needs no check
                self._check_input(blob, value)
        return values

    def _check_input(self, blob: str, value: Any) -> None:
        if value is None:
            raise EnforceError(f"Input blob {blob} of {self.type} is empty "
                               "(created but never written)", blob=blob)
        if self.cross_device_inputs:
            return
        where = CPU_DEVICE if type(value) is np.ndarray else device_of_value(value)
        if where is not None and not same_device(where, self.device):
            raise EnforceError(f"{self.type} runs on {self.device} but input blob {blob} is "
                               f"on {where}; insert a Copy op (no implicit cross-device "
                               "copies)", blob=blob)

    def run(self) -> None:
        """Compute and write the outputs; nothing is written unless every output is ready."""
        results = self.compute(*self.fetch_inputs())
        n = len(self.outputs)
        if n == 1 and not isinstance(results, (tuple, list)):
            results = (results,)
        if len(results) != n:
            raise EnforceError(f"{self.type} produced {len(results)} outputs, expected {n}")
        write = self.ws.set_blob
        for blob, value in zip(self.outputs, results):
            write(blob, value)

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.type} {self.inputs} -> {self.outputs} "
                f"on {self.device}>")
