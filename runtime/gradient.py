"""Gradient machinery: per-op gradient makers and the backward-pass builder (reference §3).

Two layers, as in Caffe2:

* **Makers** turn one forward OperatorDef plus the names of its output gradients into gradient
  OperatorDefs plus the names of its input gradients. They are registered per op type:

  - a :class:`GradientMakerBase` subclass (Caffe2's C++ makers), registered with the class
    decorator ``@register_gradient("Type")``; its ops get ``is_gradient_op`` and the forward
    op's device option, engine and arguments copied onto them by :func:`GetGradientForOp`;
  - a plain function ``f(op, g_output) -> (ops, g_input)`` (Caffe2's Python makers), registered
    with ``@register_gradient("Type")`` or ``@GradientRegistry.RegisterGradient("Type")``;
    it sees and returns None / str / :class:`GradientSlice` entries and its ops are used as-is;
  - ``NO_GRADIENT``, ``SHOULD_NOT_DO_GRADIENT`` and ``GRADIENT_NOT_IMPLEMENTED_YET`` for the
    three standard special cases.

  As in Caffe2 the class makers are tried first and the function makers are the fallback.

* :class:`IR` replays a list of forward ops in SSA form and walks them backwards, asking each
  op's maker for its gradient, checking that every blob a gradient op reads still holds the
  version the forward op saw, and summing gradients of blobs that several ops read.
  :meth:`GradientRegistry.GetBackwardPass` and ``core.Net.AddGradientOperators`` use it.

Every refusal is a :class:`c2lite.errors.GradientError` (a ``RuntimeError``); the two cases
where Caffe2 raised ``ValueError`` / ``TypeError`` use subclasses that are both.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Iterable, NamedTuple, Optional, Sequence

from c2lite.errors import EnforceError, GradientError
from c2lite.proto import caffe2_pb2

__all__ = [
    "GradientWrapper", "GradientMakerBase", "GradientSlice", "GradientRegistry", "IR",
    "register_gradient", "NO_GRADIENT", "SHOULD_NOT_DO_GRADIENT",
    "GRADIENT_NOT_IMPLEMENTED_YET", "has_gradient", "GetGradientForOp",
    "NoGradient", "ThrowInTheTowelIfGradientIsCalled", "GradientNotImplementedYet",
    "GradientName", "IsGradientBlob", "StopGradientOrphanError", "BackwardPassTypeError",
]


class StopGradientOrphanError(GradientError, ValueError):
    """A StopGradient whose output nobody reads (Caffe2 raised ValueError here)."""


class BackwardPassTypeError(GradientError, TypeError):
    """``ys`` is neither a list nor a dict (Caffe2 raised TypeError here)."""


# ---------------------------------------------------------------------------------------------
# naming conventions
# ---------------------------------------------------------------------------------------------
GRAD_SUFFIX = "_grad"


def GradientName(name: str) -> str:
    """``X`` -> ``X_grad``."""
    return str(name) + GRAD_SUFFIX


def GradientSliceIndices(name: str) -> str:
    return str(name) + "_grad_indices"


def GradientSliceValues(name: str) -> str:
    return str(name) + "_grad_values"


def IsGradientBlob(name: str) -> bool:
    """True when the first "_grad" in ``name`` is its last five characters."""
    name = str(name)
    return len(name) > 5 and name.find(GRAD_SUFFIX) == len(name) - 5


def MatchGradsToParams(op: Any) -> dict:
    """{gradient output name: param name} for outputs of ``op`` named like ``P_grad``."""
    return {str(o): str(o)[:-5] for o in op.output if IsGradientBlob(o)}


# ---------------------------------------------------------------------------------------------
# gradient descriptors
# ---------------------------------------------------------------------------------------------
class GradientSlice(NamedTuple):
    """A sparse gradient: the rows ``indices`` of the parameter get ``values``."""
    indices: Any
    values: Any


class GradientWrapper:
    """Caffe2's C++ GradientWrapper: a dense name, or an (indices, values) pair, or nothing."""

    __slots__ = ("dense", "indices", "values")

    def __init__(self, dense: str = "", indices: str = "", values: str = "") -> None:
        self.dense = str(dense) if dense else ""
        self.indices = str(indices) if indices else ""
        self.values = str(values) if values else ""

    def IsDense(self) -> bool:
        return bool(self.dense)

    def IsSparse(self) -> bool:
        return bool(self.indices) or bool(self.values)

    def IsEmpty(self) -> bool:
        return not self.IsDense() and not self.IsSparse()

    # snake_case aliases (the pybind names)
    is_dense, is_sparse, is_empty = IsDense, IsSparse, IsEmpty

    @classmethod
    def of(cls, grad: Any) -> "GradientWrapper":
        """A wrapper from a Python-side gradient: None, a name, or an (indices, values) pair."""
        if isinstance(grad, GradientWrapper):
            return grad
        if grad is None:
            return cls()
        if isinstance(grad, (tuple, list)):
            indices, values = grad
            return cls(indices=str(indices), values=str(values))
        return cls(dense=str(grad))

    def to_python(self) -> Any:
        """None, the dense name, or a GradientSlice (the inverse of :meth:`of`)."""
        if self.IsEmpty():
            return None
        if self.IsSparse():
            return GradientSlice(self.indices, self.values)
        return self.dense

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, GradientWrapper):
            return NotImplemented
        return (self.dense, self.indices, self.values) == (other.dense, other.indices,
                                                           other.values)

    def __repr__(self) -> str:
        if self.IsSparse():
            return f"GradientWrapper(indices={self.indices!r}, values={self.values!r})"
        return f"GradientWrapper(dense={self.dense!r})"


def _fail(message: str) -> GradientError:
    return GradientError(message)


# ---------------------------------------------------------------------------------------------
# makers (Caffe2's operator_gradient.h)
# ---------------------------------------------------------------------------------------------
class GradientMakerBase:
    """Base class of a per-op-type gradient maker.

    Subclasses override :meth:`GetGradientDefs` (and optionally ``CopyDeviceOption``,
    ``CopyEngine``, ``CopyArguments``) using the helpers ``I``/``O``/``GI``/``GO``...
    """

    def __init__(self, op_def: caffe2_pb2.OperatorDef, g_output: Sequence[Any]) -> None:
        self.def_ = op_def
        self.g_output_ = [GradientWrapper.of(g) for g in g_output]
        self.g_input_ = [GradientWrapper() for _ in op_def.input]

    # -- overridables ------------------------------------------------------------------------
    def CopyDeviceOption(self) -> bool:
        return True

    def CopyEngine(self) -> bool:
        return True

    def CopyArguments(self) -> bool:
        return True

    def GetGradientDefs(self) -> list:
        raise _fail(f"Gradient maker for operator {self.def_.type} does not implement "
                    "GetGradientDefs (not implemented).")

    def VerifyOp(self) -> None:
        """The forward op must pass its schema (if it has one), as Caffe2's makers checked."""
        from c2lite.schema import get_schema
        schema = get_schema(self.def_.type)
        if schema is not None:
            problem = schema.verify(self.def_)
            if problem is not None:
                raise _fail("(GradientMaker) Operator def did not pass schema checking: "
                            f"{problem}\n{self.def_}")

    def Get(self) -> tuple:
        """(gradient ops with ``is_gradient_op`` set, g_input wrappers)."""
        self.VerifyOp()
        ops = self.GetGradientDefs()
        if ops is None:
            ops = []
        elif isinstance(ops, caffe2_pb2.OperatorDef):
            ops = [ops]
        ops = list(ops)
        for op in ops:
            op.is_gradient_op = True
        return ops, self.g_input_

    def Def(self) -> caffe2_pb2.OperatorDef:
        return self.def_

    # -- names -------------------------------------------------------------------------------
    def I(self, i: int) -> str:  # noqa: E741,E743 - Caffe2's name
        if not 0 <= i < len(self.def_.input):
            raise _fail(f"[enforce fail] (i >= 0) && (i < def_.input().size()). Input index "
                        f"{i} out of range for {self.def_.type} with {len(self.def_.input)} "
                        "inputs.")
        return self.def_.input[i]

    def O(self, i: int) -> str:  # noqa: E741,E743 - Caffe2's name
        if not 0 <= i < len(self.def_.output):
            raise _fail(f"[enforce fail] (i >= 0) && (i < def_.output().size()). Output index "
                        f"{i} out of range for {self.def_.type} with {len(self.def_.output)} "
                        "outputs.")
        return self.def_.output[i]

    def _g_in(self, i: int) -> GradientWrapper:
        if not 0 <= i < len(self.g_input_):
            raise _fail(f"Input index {i} out of range for {self.def_.type} with "
                        f"{len(self.g_input_)} inputs.")
        return self.g_input_[i]

    def _g_out(self, i: int) -> GradientWrapper:
        if not 0 <= i < len(self.g_output_):
            raise _fail(f"Output index {i} out of range for {self.def_.type}: "
                        f"{len(self.g_output_)} output gradients given.")
        return self.g_output_[i]

    def GI(self, i: int) -> str:
        g = self._g_in(i)
        if g.IsSparse():
            raise _fail(f"Input {self.def_.input[i]} already set to sparse.")
        g.dense = GradientName(self.def_.input[i])
        return g.dense

    def GI_I(self, i: int) -> str:
        g = self._g_in(i)
        if g.IsDense():
            raise _fail(f"Input {self.def_.input[i]} already set to dense.")
        g.indices = GradientSliceIndices(self.def_.input[i])
        return g.indices

    def GI_V(self, i: int) -> str:
        g = self._g_in(i)
        if g.IsDense():
            raise _fail(f"Input {self.def_.input[i]} already set to dense.")
        g.values = GradientSliceValues(self.def_.input[i])
        return g.values

    def GO(self, i: int) -> str:
        g = self._g_out(i)
        if not g.IsDense():
            raise _fail(f"Gradient of output {self.def_.output[i]} is either sparse or not "
                        "provided.")
        return g.dense

    def GO_I(self, i: int) -> str:
        g = self._g_out(i)
        if not g.IsSparse():
            raise _fail(f"Gradient of output {self.def_.output[i]} is either dense or not "
                        "provided.")
        return g.indices

    def GO_V(self, i: int) -> str:
        g = self._g_out(i)
        if not g.IsSparse():
            raise _fail(f"Gradient of output {self.def_.output[i]} is either dense or not "
                        "provided.")
        return g.values

    def GradOut(self, i: int) -> GradientWrapper:
        return self._g_out(i)

    def SetDense(self, i: int, name: str) -> None:
        g = self._g_in(i)
        if g.IsSparse():
            raise _fail(f"Input {self.def_.input[i]} already set to sparse.")
        g.dense = str(name)

    def SetSparse(self, i: int, indices: str, values: str) -> None:
        g = self._g_in(i)
        if g.IsDense():
            raise _fail(f"Input {self.def_.input[i]} already set to dense.")
        g.indices, g.values = str(indices), str(values)

    # -- building ops ------------------------------------------------------------------------
    @staticmethod
    def SingleGradientDef(op_type: str, name: str, inputs: Iterable[Any],
                          outputs: Iterable[Any], args: Any = None,
                          device_option: Optional[caffe2_pb2.DeviceOption] = None,
                          engine: Optional[str] = None) -> list:
        """One OperatorDef, built like Caffe2's CreateOperatorDef (no DeviceScope, no
        NameScope): ``name`` is always set; the device option only when given with a
        device type; the engine only when non-empty. ``args`` is a list of Argument protos
        or a dict {name: value}."""
        return [CreateOperatorDef(op_type, name, inputs, outputs, args, device_option, engine)]


def CreateOperatorDef(op_type: str, name: str, inputs: Iterable[Any], outputs: Iterable[Any],
                      args: Any = None, device_option: Optional[caffe2_pb2.DeviceOption] = None,
                      engine: Optional[str] = None) -> caffe2_pb2.OperatorDef:
    """Caffe2's C++ CreateOperatorDef (see :meth:`GradientMakerBase.SingleGradientDef`)."""
    op = caffe2_pb2.OperatorDef()
    op.type = op_type
    op.name = name or ""
    op.input.extend(str(b) for b in inputs)
    op.output.extend(str(b) for b in outputs)
    if args:
        if isinstance(args, dict):
            from c2lite.core import MakeArgument
            op.arg.extend(MakeArgument(k, v) for k, v in args.items())
        elif isinstance(args, caffe2_pb2.Argument):
            op.arg.append(args)
        else:
            op.arg.extend(args)
    if device_option is not None and device_option.HasField("device_type"):
        op.device_option.CopyFrom(device_option)
    if engine:
        op.engine = engine
    return op


class NoGradient(GradientMakerBase):
    """No gradient ops and no input gradients: the backward pass stops here."""

    def GetGradientDefs(self) -> list:
        return []


class ThrowInTheTowelIfGradientIsCalled(GradientMakerBase):
    """For ops whose gradient must never be asked for (SHOULD_NOT_DO_GRADIENT)."""

    def Get(self) -> tuple:
        raise _fail(f"One should not call gradient for operator {self.def_.type}.")


class GradientNotImplementedYet(GradientMakerBase):
    """For ops that should have a gradient but do not yet (GRADIENT_NOT_IMPLEMENTED_YET)."""

    def Get(self) -> tuple:
        raise _fail(f"Operator {self.def_.type} should have a gradient but is not "
                    "implemented yet.")


# ---------------------------------------------------------------------------------------------
# registration
# ---------------------------------------------------------------------------------------------
#: op type -> GradientMakerBase subclass (Caffe2's C++ GradientRegistry)
_MAKERS: dict[str, type] = {}
#: op type -> f(op, g_output) -> (ops, g_input) (Caffe2's Python GradientRegistry)
_PY_MAKERS: dict[str, Callable] = {}


def register_gradient(op_type: str) -> Callable[[Any], Any]:
    """Decorator registering the gradient maker of ``op_type``.

    Applied to a :class:`GradientMakerBase` subclass it registers a C++-style maker; applied to
    a function ``f(op, g_output) -> (ops, g_input)`` it registers a Python-style maker. A type
    can have one maker of each kind; registering the same kind twice is an error (Caffe2's
    registry refused duplicate keys).
    """
    def deco(maker: Any) -> Any:
        if isinstance(maker, type):
            if not issubclass(maker, GradientMakerBase):
                raise TypeError(f"register_gradient({op_type!r}): {maker.__name__} is not a "
                                "GradientMakerBase subclass")
            if op_type in _MAKERS and _MAKERS[op_type] is not maker:
                raise GradientError(f"Gradient maker for operator {op_type} already "
                                    f"registered ({_MAKERS[op_type].__name__}).")
            _MAKERS[op_type] = maker
        elif callable(maker):
            if op_type in _PY_MAKERS and _PY_MAKERS[op_type] is not maker:
                raise GradientError(f"Python gradient function for operator {op_type} "
                                    "already registered.")
            _PY_MAKERS[op_type] = maker
        else:
            raise TypeError(f"register_gradient({op_type!r}) needs a GradientMakerBase "
                            f"subclass or a function, got {type(maker).__name__}")
        return maker
    return deco


def NO_GRADIENT(op_type: str) -> None:
    """``op_type`` has no gradient: its inputs get none and the backward pass stops there."""
    register_gradient(op_type)(NoGradient)


def SHOULD_NOT_DO_GRADIENT(op_type: str) -> None:
    """Asking for the gradient of ``op_type`` is an error."""
    register_gradient(op_type)(ThrowInTheTowelIfGradientIsCalled)


def GRADIENT_NOT_IMPLEMENTED_YET(op_type: str) -> None:
    """``op_type`` should have a gradient, but c2lite does not implement it yet."""
    register_gradient(op_type)(GradientNotImplementedYet)


def has_gradient(op_type: str) -> bool:
    """Whether any gradient maker (class or function, special ones included) is registered."""
    return op_type in _MAKERS or op_type in _PY_MAKERS


def gradient_maker(op_type: str) -> Optional[Any]:
    """The registered maker class (or else function) of ``op_type``, or None."""
    return _MAKERS.get(op_type) or _PY_MAKERS.get(op_type)


def registered_gradients() -> list[str]:
    return sorted(set(_MAKERS) | set(_PY_MAKERS))


def GetGradientForOp(op_def: caffe2_pb2.OperatorDef, g_output: Sequence[Any]) -> tuple:
    """Caffe2's C++ ``GetGradientForOp``: run the class maker of ``op_def.type`` and
    post-process its ops. Returns (ops, [GradientWrapper per forward input])."""
    maker_cls = _MAKERS.get(op_def.type)
    if maker_cls is None:
        raise _fail(f"Gradient maker for operator {op_def.type} not implemented.")
    maker = maker_cls(op_def, [GradientWrapper.of(g) for g in g_output])
    ops, g_input = maker.Get()
    if maker.CopyDeviceOption() and op_def.HasField("device_option"):
        for op in ops:
            op.device_option.CopyFrom(op_def.device_option)
    # Caffe2 copies the engine whenever the forward def *has* one, even "" (the serialized
    # FC/Relu gradient defs carry ``engine: ""`` exactly when their forward def does).
    if maker.CopyEngine() and op_def.HasField("engine"):
        for op in ops:
            op.engine = op_def.engine
    if maker.CopyArguments() and len(op_def.arg):
        for op in ops:
            op.arg.extend(op_def.arg)
    if len(g_input) != len(op_def.input):
        raise _fail(f"[enforce fail at operator.cc] meta.g_input_.size() == def.input_size(). "
                    f"{len(g_input)} vs {len(op_def.input)}. Gradient maker for "
                    f"{op_def.type} returned the wrong number of input gradients.")
    for g in g_input:
        if g.IsSparse() and not (g.indices and g.values):
            raise _fail("For sparse gradient, one should set both indices and values. "
                        f"Currently we have: ({g.indices}, {g.values}).")
    return ops, g_input


# ---------------------------------------------------------------------------------------------
# Python-side registry (caffe2.python.core.GradientRegistry)
# ---------------------------------------------------------------------------------------------
def _blob_ref(name: Any) -> Any:
    from c2lite.core import BlobReference
    return name if isinstance(name, BlobReference) else BlobReference(str(name))


class GradientRegistry:
    """Per-op gradient lookup and the backward-pass entry point."""

    #: The Python makers (the same dict ``register_gradient`` fills for functions).
    gradient_registry_ = _PY_MAKERS

    @classmethod
    def RegisterGradient(cls, op_type: str) -> Callable[[Callable], Callable]:
        """Decorator registering a Python maker ``f(op, g_output) -> (ops, g_input)``;
        a later registration replaces an earlier one, as in Caffe2."""
        def wrapper(func: Callable) -> Callable:
            cls.gradient_registry_[op_type] = func
            return func
        return wrapper

    @classmethod
    def _GetGradientForOpCC(cls, op_def: Any, g_output: Sequence[Any]) -> tuple:
        ops, g_input = GetGradientForOp(op_def, [GradientWrapper.of(g) for g in g_output])
        return ops, [g.to_python() for g in g_input]

    @classmethod
    def GetGradientForOp(cls, op: Any, g_output: Sequence[Any]) -> tuple:
        """(gradient ops, g_input) for one forward op; g entries are None, str or
        GradientSlice. Class makers first, then Python makers; if neither works the error
        is ``Exception when creating gradient for [T]:<err>.\\nOp: \\n<op>``."""
        try:
            ops, g_input = cls._GetGradientForOpCC(op, g_output)
        except Exception as exc:  # noqa: BLE001 - Caffe2 falls back on any failure
            func = cls.gradient_registry_.get(op.type)
            if func is None:
                err = exc.condition if isinstance(exc, EnforceError) else str(exc)
                raise GradientError(f"Exception when creating gradient for [{op.type}]:"
                                    f"{err}.\nOp: \n{op}") from exc
            ops, g_input = func(op, list(g_output))
        if ops is None:
            ops = []
        elif not isinstance(ops, list):
            ops = list(ops) if isinstance(ops, tuple) else [ops]
        g_input = [_python_grad(g) for g in g_input]
        return ops, g_input

    @classmethod
    def GetBackwardPass(cls, operators: Iterable[Any], ys: Any) -> tuple:
        """(gradient ops, {blob: gradient}) for ``operators`` and the blobs ``ys``."""
        return IR(operators).GetBackwardPass(ys)


def _python_grad(g: Any) -> Any:
    """Normalise a maker's g_input entry to None, str or GradientSlice of str."""
    if g is None:
        return None
    if isinstance(g, GradientWrapper):
        return g.to_python()
    if isinstance(g, (tuple, list)):
        indices, values = g
        return GradientSlice(str(indices), str(values))
    return str(g) if g != "" else None


def _index_in_gradient_list(g_list: Sequence[Any], name: str) -> Optional[int]:
    """Index of the first entry whose dense name, indices or values is ``name``."""
    for i, g in enumerate(g_list):
        if isinstance(g, GradientSlice):
            if g.indices == name or g.values == name:
                return i
        elif g is not None and g == name:
            return i
    return None


# ---------------------------------------------------------------------------------------------
# the backward pass (caffe2.python.core.IR)
# ---------------------------------------------------------------------------------------------
class OpSSA(NamedTuple):
    op: Any
    in_versions: dict
    out_versions: dict


class GradGenMeta(NamedTuple):
    """A dense gradient of (blob, version): written by output ``idx`` of ``grad_op``, or a
    pass-through name when ``grad_op`` is None."""
    grad_op: Any
    idx: int
    gradient: Any
    device_option: Any


class SparseGradGenMeta(NamedTuple):
    grad_op_indices: Any
    idx_indices: int
    grad_op_values: Any
    idx_values: int
    gradient: GradientSlice
    device_option: Any


def _option_of(op: Any) -> Optional[caffe2_pb2.DeviceOption]:
    return op.device_option if op is not None and op.HasField("device_option") else None


def _same_placement(a: Optional[caffe2_pb2.DeviceOption],
                    b: Optional[caffe2_pb2.DeviceOption]) -> bool:
    from c2lite.core import device_option_equal
    return device_option_equal(a if a is not None else caffe2_pb2.DeviceOption(),
                               b if b is not None else caffe2_pb2.DeviceOption())


class IR:
    """SSA view of a forward op list, and the backward pass over it (reference §3.2)."""

    AUTOGEN_GRAD_SUFFIX = "_autogen_grad"

    def __init__(self, operators: Iterable[Any]) -> None:
        self.ssa: list[OpSSA] = []
        self.frontier: defaultdict = defaultdict(int)
        self.gradient_frontier: dict[str, int] = {}
        self.gradient_generators: defaultdict = defaultdict(lambda: defaultdict(list))
        self.input_usages: defaultdict = defaultdict(lambda: defaultdict(list))
        self.out_version_history: defaultdict = defaultdict(list)
        self.in_version_history: defaultdict = defaultdict(list)
        operators = list(operators)
        for op in operators:
            self.Play(op)
        self.SanityCheck(operators)

    # -- step 0: forward replay --------------------------------------------------------------
    def Play(self, op: Any) -> None:
        """Record ``op``: inputs at their current version, outputs at the next one."""
        in_versions: dict[str, int] = {}
        for name in op.input:
            version = self.frontier[name]
            in_versions[name] = version
            self.input_usages[name][version].append(len(self.ssa))
            self.in_version_history[name].append((op, version))
        out_versions: dict[str, int] = {}
        for name in op.output:
            if name in self.frontier:
                self.frontier[name] += 1
            else:
                self.frontier[name] = 0
            out_versions[name] = self.frontier[name]
            self.out_version_history[name].append((op, self.frontier[name]))
        self.ssa.append(OpSSA(op, in_versions, out_versions))

    def SanityCheck(self, operators: Sequence[Any]) -> None:
        for op in operators:
            if op.type == "StopGradient" and op.output[0] not in self.input_usages:
                raise StopGradientOrphanError(
                    f"StopGradient's output '{op.output[0]}' is orphan.\nYou typically want "
                    f"to specify same input and output for\nStopGradient. Op:\n\n{op}")

    # -- step 3.3: validity of gradient-op inputs --------------------------------------------
    def _history(self, name: str, direction: str) -> str:
        if direction == "out":
            text = ("DEBUG HELP:\nMaybe you use same output blob twice for different ops?\n"
                    f"== Version history of blob [{name}]\n")
            for op, version in self.out_version_history[name]:
                text += f"Version (out) {version} <-- {op}\n"
        else:
            text = ("DEBUG HELP:\nMaybe the blob was overwritten by another op?\n"
                    f"== Version history of blob [{name}]\n")
            for op, version in self.in_version_history[name]:
                text += f"version (in) {version} <-- {op}\n"
        return text

    def CheckGradientOperatorInput(self, grad_op_input: str, g_output: Sequence[Any],
                                   fwd_op_idx: int, locally_generated_blobs: list) -> None:
        forward_op, in_versions, out_versions = self.ssa[fwd_op_idx]
        original_index = _index_in_gradient_list(g_output, grad_op_input)
        if original_index is not None:
            original_name = forward_op.output[original_index]
            expected = out_versions[original_name]
            have = self.gradient_frontier.get(original_name)
            if expected != have:
                raise GradientError(
                    f'Gradient name "{grad_op_input}" is expected to correspond to version '
                    f'{expected} of "{original_name}", but currently we have version '
                    f"{have}.\n\n" + self._history(original_name, "out"))
        elif grad_op_input in out_versions:
            if self.frontier[grad_op_input] != out_versions[grad_op_input]:
                raise GradientError(
                    f'Gradient operator needs output "{grad_op_input}" at version '
                    f"{out_versions[grad_op_input]}, but currently we have version "
                    f"{self.frontier[grad_op_input]}.\n\n" + self._history(grad_op_input, "out"))
        elif grad_op_input in in_versions:
            if self.frontier[grad_op_input] != in_versions[grad_op_input]:
                raise GradientError(
                    f'Gradient operator needs input "{grad_op_input}" at version '
                    f"{in_versions[grad_op_input]}, but currently we have version "
                    f"{self.frontier[grad_op_input]}.\n\n" + self._history(grad_op_input, "in"))
        elif grad_op_input not in locally_generated_blobs:
            raise GradientError(
                f'Blob name "{grad_op_input}" not in the scope of operator: {forward_op}\nand '
                "is not generated by any of the local gradient operators.")

    # -- step 3.4: generators ------------------------------------------------------------------
    def BuildGradientGenerators(self, fwd_op_idx: int, gradient_ops: list,
                                g_output: list, g_input: list) -> None:
        forward_op, in_versions, _ = self.ssa[fwd_op_idx]
        local: list[str] = []
        # (name, version) -> [indices part, values part] of one sparse generator
        sparse_parts: dict[tuple, list] = {}
        sparse_order: list[tuple] = []
        for grad_op in gradient_ops:
            for name in grad_op.input:
                self.CheckGradientOperatorInput(name, g_output, fwd_op_idx, local)
            local.extend(str(o) for o in grad_op.output)
            for i, out in enumerate(grad_op.output):
                input_index = _index_in_gradient_list(g_input, out)
                if input_index is None:
                    continue
                input_name = forward_op.input[input_index]
                version = in_versions[input_name]
                g = g_input[input_index]
                if isinstance(g, GradientSlice):
                    key = (input_name, version)
                    if key not in sparse_parts:
                        sparse_parts[key] = [None, None, g, _option_of(grad_op)]
                        sparse_order.append(key)
                    part = 0 if g.indices == out else 1
                    sparse_parts[key][part] = (grad_op, i)
                else:
                    self.gradient_generators[input_name][version].append(
                        GradGenMeta(grad_op, i, g, _option_of(grad_op)))
        for key in sparse_order:
            ind, val, g, option = sparse_parts[key]
            op_i, idx_i = ind if ind is not None else (None, 0)
            op_v, idx_v = val if val is not None else (None, 0)
            self.gradient_generators[key[0]][key[1]].append(
                SparseGradGenMeta(op_i, idx_i, op_v, idx_v, g, option))
        # Pass-through gradients (e.g. Sum's): no grad op writes them.
        fwd_option = _option_of(forward_op)
        for input_index, g in enumerate(g_input):
            if g is None:
                continue
            input_name = forward_op.input[input_index]
            version = in_versions[input_name]
            if isinstance(g, GradientSlice):
                if str(g.indices) not in local and str(g.values) not in local:
                    self.gradient_generators[input_name][version].append(
                        SparseGradGenMeta(None, 0, None, 0, g, fwd_option))
            elif str(g) not in local:
                self.gradient_generators[input_name][version].append(
                    GradGenMeta(None, 0, g, fwd_option))
        for i, g in enumerate(g_input):
            if g is not None:
                name = forward_op.input[i]
                self.gradient_frontier[name] = in_versions[name]

    # -- step 3.7: accumulation ----------------------------------------------------------------
    @staticmethod
    def _VerifyGradientGenerators(generators: list) -> bool:
        if len({type(g) for g in generators}) > 1:
            raise GradientError("Automatic aggregation of a mix of sparse and dense gradients "
                                "is not supported yet")
        if len(generators) < 2:
            return False
        options = [g.device_option for g in generators]
        if not all(_same_placement(o, options[0]) for o in options[1:]):
            raise GradientError("Unexpected behavior: not all grad ops have the same device "
                                "option.")
        return True

    @staticmethod
    def _SumOutputName(generators: list, input_name: str) -> str:
        def strip(s: str, suffix: str) -> str:
            return s[: -len(suffix)] if s.endswith(suffix) else s
        for g in generators:
            if isinstance(g, GradGenMeta):
                if g.grad_op is not None:
                    return g.grad_op.output[g.idx]
            else:
                if g.grad_op_indices is not None:
                    return strip(g.grad_op_indices.output[g.idx_indices], "_indices")
                if g.grad_op_values is not None:
                    return strip(g.grad_op_values.output[g.idx_values], "_values")
        return input_name + GRAD_SUFFIX

    @staticmethod
    def _Rename(grad_op: Any, idx: int, count: int) -> tuple:
        """Give output ``idx`` of an already-emitted grad op its autosplit name."""
        grad_op.output[idx] = f"_{grad_op.output[idx]}_autosplit_{count}"
        return grad_op.output[idx], count + 1

    @staticmethod
    def _CheckPassThrough(base: str, g: Any) -> None:
        if str(base) == str(g):
            raise GradientError("The gradient output of empty gradient op can not be the same "
                                "as the normal name of the current input gradient.")

    def _MakeDenseSumOps(self, generators: list, base: str) -> tuple:
        from c2lite.core import CreateOperator
        inputs: list[str] = []
        count = 0
        first = True
        for g in generators:
            if g.grad_op is not None:
                if first:
                    first = False
                    out = g.grad_op.output[g.idx]
                else:
                    out, count = self._Rename(g.grad_op, g.idx, count)
                inputs.append(out)
            else:
                self._CheckPassThrough(base, g.gradient)
                inputs.append(str(g.gradient))
        if base in inputs:
            k = inputs.index(base)
            inputs[0], inputs[k] = inputs[k], inputs[0]
        op = CreateOperator("Sum", [_blob_ref(x) for x in inputs], [_blob_ref(base)])
        return [op], base

    def _MakeSparseSumOps(self, generators: list, base: str) -> tuple:
        from c2lite.core import CreateOperator
        indices: list[str] = []
        values: list[str] = []
        count_i = count_v = 0
        for g in generators:
            if g.grad_op_indices is not None:
                out, count_i = self._Rename(g.grad_op_indices, g.idx_indices, count_i)
                indices.append(out)
            else:
                self._CheckPassThrough(base, g.gradient.indices)
                indices.append(str(g.gradient.indices))
            if g.grad_op_values is not None:
                out, count_v = self._Rename(g.grad_op_values, g.idx_values, count_v)
                values.append(out)
            else:
                self._CheckPassThrough(base, g.gradient.values)
                values.append(str(g.gradient.values))
        ind_out, val_out = base + "_indices_concat", base + "_values_concat"
        ops = [
            CreateOperator("Concat", [_blob_ref(x) for x in indices],
                           [_blob_ref(ind_out), _blob_ref(base + "_indices_concat_split")],
                           axis=0),
            CreateOperator("Concat", [_blob_ref(x) for x in values],
                           [_blob_ref(val_out), _blob_ref(base + "_values_concat_split")],
                           axis=0),
        ]
        return ops, GradientSlice(ind_out, val_out)

    @staticmethod
    def _SetSumOpsDeviceOption(sum_ops: list, generators: list) -> None:
        """2018 rule: the device option of the first generator's grad op that has one."""
        for g in generators:
            if isinstance(g, GradGenMeta):
                candidates = [g.grad_op]
            else:
                candidates = [g.grad_op_indices, g.grad_op_values]
            for grad_op in candidates:
                if grad_op is not None and grad_op.HasField("device_option"):
                    for op in sum_ops:
                        op.device_option.CopyFrom(grad_op.device_option)
                    return

    def _MakeSumOps(self, input_name: str, version: int) -> tuple:
        generators = self.gradient_generators[input_name][version]
        base = self._SumOutputName(generators, input_name)
        if isinstance(generators[0], GradGenMeta):
            sum_ops, g = self._MakeDenseSumOps(generators, base)
        else:
            sum_ops, g = self._MakeSparseSumOps(generators, base)
        self._SetSumOpsDeviceOption(sum_ops, generators)
        return sum_ops, g

    def DoGradientAccumulation(self, fwd_op_idx: int) -> tuple:
        """Sum/Concat ops for inputs of this op whose gradient comes from several consumers,
        emitted when this op is their first consumer (i.e. the last one processed)."""
        forward_op, in_versions, _ = self.ssa[fwd_op_idx]
        sum_ops: list = []
        grad_map: dict = {}
        # Caffe2 iterated set(op.input) (an arbitrary order); first appearance is
        # deterministic and otherwise equivalent.
        for input_name in dict.fromkeys(forward_op.input):
            version = in_versions[input_name]
            usage = self.input_usages[input_name][version]
            if len(usage) <= 1 or fwd_op_idx != usage[0]:
                continue
            generators = self.gradient_generators[input_name][version]
            try:
                if not self._VerifyGradientGenerators(generators):
                    continue
            except GradientError as err:
                raise GradientError(f"Gradients for param ''{input_name}'' failed to verify: "
                                    f"{err.condition}") from err
            ops, g = self._MakeSumOps(input_name, version)
            sum_ops.extend(ops)
            grad_map[input_name] = g
        return sum_ops, grad_map

    # -- steps 1-4 ---------------------------------------------------------------------------
    def _GetInitGradients(self, ys: dict) -> tuple:
        from c2lite.core import CreateOperator
        input_to_grad: dict = {}
        ops: list = []
        for y, g in ys.items():
            seed = None
            if g is None:
                seed = CreateOperator("ConstantFill", [_blob_ref(y)],
                                      [_blob_ref(y + self.AUTOGEN_GRAD_SUFFIX)], value=1.0)
                ops.append(seed)
                g = seed.output[0]
            if isinstance(g, GradientSlice) or (isinstance(g, tuple) and len(g) == 2):
                input_to_grad[y] = GradientSlice(str(g[0]), str(g[1]))
            else:
                input_to_grad[y] = str(g)
            if seed is not None:
                self.gradient_generators[y][self.frontier[y]].append(
                    GradGenMeta(seed, 0, str(g), _option_of(seed)))
        return input_to_grad, ops

    def _GenerateGradientsForForwardOp(self, fwd_op_idx: int, input_to_grad: dict) -> tuple:
        forward_op = self.ssa[fwd_op_idx].op
        g_output = [input_to_grad.get(name) for name in forward_op.output]
        if all(g is None for g in g_output) and forward_op.type != "ZeroGradient":
            return {}, []
        grad_ops, g_input = GradientRegistry.GetGradientForOp(forward_op, g_output)
        self.BuildGradientGenerators(fwd_op_idx, grad_ops, g_output, g_input)
        new_map: dict = {}
        outputs = list(forward_op.output)
        for name, grad in zip(forward_op.input, g_input):
            # A None never erases a known gradient, unless the op rewrote the blob.
            if grad is not None or name not in input_to_grad or name in outputs:
                new_map[name] = grad
        return new_map, grad_ops

    def GetBackwardPass(self, ys: Any) -> tuple:
        """(gradient ops, {BlobReference: BlobReference | GradientSlice}) for ``ys``: a list
        (seeded with ones) or a dict {y: None | gradient name | GradientSlice}."""
        from c2lite.core import BlobReference
        if isinstance(ys, list):
            ys = {str(y): None for y in ys}
        elif isinstance(ys, dict):
            ys = {str(y): g for y, g in ys.items()}
        else:
            raise BackwardPassTypeError("ys should either be a list or a dict.")
        for y in ys:
            self.gradient_frontier[y] = self.frontier[y]
            self.input_usages[y][self.frontier[y]].append(len(self.ssa))
        all_input_to_grad, all_ops = self._GetInitGradients(ys)
        for idx in reversed(range(len(self.ssa))):
            input_to_grad, grad_ops = self._GenerateGradientsForForwardOp(idx, all_input_to_grad)
            all_input_to_grad.update(input_to_grad)
            all_ops.extend(grad_ops)
            sum_ops, grad_map = self.DoGradientAccumulation(idx)
            all_input_to_grad.update(grad_map)
            all_ops.extend(sum_ops)
        result: dict = {}
        for key, val in all_input_to_grad.items():
            if val is None:
                continue
            if isinstance(val, GradientSlice):
                out: Any = GradientSlice(BlobReference(str(val.indices)),
                                         BlobReference(str(val.values)))
            else:
                out = BlobReference(str(val))
            result[BlobReference(str(key))] = out
        return all_ops, result
