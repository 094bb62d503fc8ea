"""The one exception family of c2lite.

Caffe2 surfaced every C++ failure to Python as ``RuntimeError``; c2lite keeps that contract:
everything it raises for bad input is an :class:`EnforceError` (a ``RuntimeError``), and the
message names the op (index, type, name), the net, the blob and the violated condition.
"""
from __future__ import annotations

from typing import Any, Optional


class EnforceError(RuntimeError):
    """A violated condition. Carries where it happened so callers can act on it."""

    def __init__(self, message: str, *, blob: Optional[str] = None,
                 op_index: Optional[int] = None, op_type: Optional[str] = None,
                 op_name: Optional[str] = None, net: Optional[str] = None,
                 path: Optional[str] = None) -> None:
        self.condition = message
        self.blob = blob
        self.op_index = op_index
        self.op_type = op_type
        self.op_name = op_name
        self.net = net
        self.path = path
        super().__init__(self._render())

    def _render(self) -> str:
        text = self.condition
        if self.blob is not None:
            text += f" (blob '{self.blob}')"
        if self.path is not None:
            text += f" [file '{self.path}']"
        if self.op_type is not None:
            where = f"op #{self.op_index}" if self.op_index is not None else "op"
            where += f" {self.op_type}"
            if self.op_name:
                where += f" '{self.op_name}'"
            if self.net:
                where += f" in net '{self.net}'"
            text += f"\n  Error from operator: {where}"
        return text

    def with_op(self, op_index: Optional[int], op_type: str, op_name: str = "",
                net: Optional[str] = None) -> "EnforceError":
        """Attach op context (only the first, innermost context is kept)."""
        if self.op_type is None:
            self.op_index, self.op_type, self.op_name = op_index, op_type, op_name
        if self.net is None and net:
            self.net = net
        self.args = (self._render(),)
        return self

    def __str__(self) -> str:
        return self._render()


class ProtoError(EnforceError):
    """A protobuf file or byte string that cannot be decoded (truncated, malformed, too large)."""


class SchemaError(EnforceError):
    """An OperatorDef that fails its OpSchema's Verify."""


class DeviceError(EnforceError):
    """No implementation on the requested device, device unavailable, or a cross-device input."""


class GradientError(EnforceError):
    """The backward-pass builder or a gradient maker refused a graph."""


def enforce(condition: Any, message: str, *, blob: Optional[str] = None,
            error: type = EnforceError) -> None:
    """Raise ``error(message)`` unless ``condition`` holds."""
    if not condition:
        raise error(message, blob=blob)


def enforce_eq(lhs: Any, rhs: Any, condition: str, *, where: str = "",
               extra: str = "", blob: Optional[str] = None) -> None:
    """Caffe2's CAFFE_ENFORCE_EQ: ``[enforce fail at where] cond. lhs vs rhs extra``."""
    if lhs != rhs:
        head = f"[enforce fail at {where}] " if where else "[enforce fail] "
        msg = f"{head}{condition}. {lhs} vs {rhs}"
        if extra:
            msg += f". {extra}"
        raise EnforceError(msg, blob=blob)
