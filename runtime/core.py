"""The ``caffe2.python.core`` front end: build NetDefs and plans with Python calls.

``net.Relu(["x"], ["y"])`` appends an OperatorDef; names get the current NameScope; ops get the
current DeviceScope. Legacy scripts port by changing ``from caffe2.python import core`` to
``from c2lite import core``.
"""
from __future__ import annotations

import contextlib
import copy
import itertools
import threading
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

from c2lite.device import CPU, CUDA
from c2lite.errors import EnforceError
from c2lite.proto import caffe2_pb2
from c2lite.registry import nearest_names, registered_operators, set_engine_pref
from c2lite.schema import get_schema, schemas

# ---------------------------------------------------------------------------------------------
# scopes (thread-local, as in caffe2.python.scope)
# ---------------------------------------------------------------------------------------------
_scope = threading.local()
_NAMESCOPE_SEPARATOR = "/"


def CurrentNameScope() -> str:
    return getattr(_scope, "namescope", "")


def CurrentDeviceScope() -> Optional[caffe2_pb2.DeviceOption]:
    return getattr(_scope, "devicescope", None)


@contextlib.contextmanager
def NameScope(prefix: Optional[str], reset: bool = False) -> Iterator[None]:
    """Prefix new blob names with ``prefix/`` while inside the block."""
    old = CurrentNameScope()
    prefix = prefix + _NAMESCOPE_SEPARATOR if prefix else ""
    _scope.namescope = prefix if reset else old + prefix
    try:
        yield
    finally:
        _scope.namescope = old


@contextlib.contextmanager
def DeviceScope(device_option: Optional[caffe2_pb2.DeviceOption],
                node_name: Optional[str] = None) -> Iterator[None]:
    """Ops created inside the block get ``device_option`` unless given one explicitly."""
    old = CurrentDeviceScope()
    new = copy.deepcopy(device_option) if device_option is not None else None
    if new is not None and node_name:
        new.node_name = node_name
    _scope.devicescope = new
    try:
        yield
    finally:
        _scope.devicescope = old


def EmptyDeviceScope() -> contextlib.AbstractContextManager:
    return DeviceScope(None)


def ScopedName(name: str) -> str:
    return CurrentNameScope() + name


def DeviceOption(device_type: int, device_id: int = 0, random_seed: Optional[int] = None,
                 node_name: Optional[str] = None, numa_node_id: Optional[int] = None,
                 extra_info: Optional[Sequence[str]] = None,
                 cuda_gpu_id: Optional[int] = None) -> caffe2_pb2.DeviceOption:
    """A DeviceOption proto; ``cuda_gpu_id`` is the 2018 spelling of ``device_id``."""
    option = caffe2_pb2.DeviceOption()
    option.device_type = int(device_type)
    option.device_id = int(cuda_gpu_id if cuda_gpu_id is not None else device_id)
    if random_seed is not None:
        option.random_seed = random_seed
    if node_name is not None:
        option.node_name = node_name
    if numa_node_id is not None:
        option.numa_node_id = numa_node_id
    if extra_info is not None:
        option.extra_info.extend(extra_info)
    return option


def device_option_equal(a: Any, b: Any, ignore_node_name: bool = True,
                        ignore_random_seed: bool = True) -> bool:
    """Equal placement: both CPU, or same type and id (node name / seed ignored by default)."""
    if not a or not b:
        return a == b
    if not ignore_node_name and a.node_name != b.node_name:
        return False
    if not ignore_random_seed and a.random_seed != b.random_seed:
        return False
    if a.device_type != b.device_type:
        return False
    return a.device_type == CPU or a.device_id == b.device_id


def SetEnginePref(per_op: dict, global_pref: dict) -> None:
    set_engine_pref(per_op, global_pref)


def IsOperator(op_type: str) -> bool:
    """True for any op type c2lite registers a kernel or a schema for."""
    return op_type in registered_operators() or get_schema(op_type) is not None


def IsOperatorWithEngine(op_type: str, engine: str) -> bool:
    return f"{op_type}_ENGINE_{engine}" in registered_operators()


# ---------------------------------------------------------------------------------------------
# arguments and operators
# ---------------------------------------------------------------------------------------------
def MakeArgument(key: str, value: Any) -> caffe2_pb2.Argument:
    """An Argument proto typed the way caffe2.python.utils.MakeArgument does it."""
    arg = caffe2_pb2.Argument()
    arg.name = key
    if isinstance(value, np.ndarray):
        value = value.flatten().tolist() if value.dtype != np.float32 else \
            [float(v) for v in value.flatten()]
        if not value:
            return arg
    if isinstance(value, (bool, np.bool_)):
        arg.i = int(value)
    elif isinstance(value, (int, np.integer)):
        arg.i = int(value)
    elif isinstance(value, (float, np.floating)):
        arg.f = float(value)
    elif isinstance(value, str):
        arg.s = value.encode("utf-8")
    elif isinstance(value, bytes):
        arg.s = value
    elif isinstance(value, caffe2_pb2.NetDef):
        arg.n.CopyFrom(value)
    elif isinstance(value, caffe2_pb2.TensorProto):
        arg.t.CopyFrom(value)
    elif hasattr(value, "SerializeToString"):
        arg.s = value.SerializeToString()
    elif isinstance(value, (list, tuple)):
        _fill_repeated(arg, key, list(value))
    elif value is None:
        raise ValueError(f"Argument {key} is None")
    else:
        raise ValueError(f"Unexpected type for argument {key}: {type(value).__name__}")
    return arg


def _fill_repeated(arg: caffe2_pb2.Argument, key: str, values: list) -> None:
    if not values:
        return
    if all(isinstance(v, (float, np.floating)) for v in values):
        arg.floats.extend(float(v) for v in values)
    elif all(isinstance(v, (bool, int, np.integer, np.bool_)) for v in values):
        arg.ints.extend(int(v) for v in values)
    elif all(isinstance(v, (float, int, np.number)) and not isinstance(v, bool) for v in values):
        arg.floats.extend(float(v) for v in values)
    elif all(isinstance(v, (str, bytes)) for v in values):
        arg.strings.extend(v.encode("utf-8") if isinstance(v, str) else v for v in values)
    elif all(isinstance(v, caffe2_pb2.NetDef) for v in values):
        arg.nets.extend(values)
    elif all(isinstance(v, caffe2_pb2.TensorProto) for v in values):
        arg.tensors.extend(values)
    else:
        raise ValueError(f"Unknown iterable argument type: key={key} value={values!r}")


def _blob_name(blob: Any, scoped: bool) -> str:
    if isinstance(blob, BlobReference):
        return str(blob)
    if isinstance(blob, bytes):
        blob = blob.decode()
    if not isinstance(blob, str):
        raise TypeError(f"A blob name must be a str or BlobReference, not {type(blob).__name__}")
    return ScopedName(blob) if scoped else blob


def _name_list(blobs: Any, scoped: bool = True) -> list[str]:
    if blobs is None:
        return []
    if isinstance(blobs, (str, bytes, BlobReference)):
        blobs = [blobs]
    return [_blob_name(b, scoped) for b in blobs]


def CreateOperator(operator_type: str, inputs: Any, outputs: Any, name: str = "",
                   control_input: Any = None, device_option: Any = None, arg: Any = None,
                   engine: Optional[str] = None, debug_info: Optional[str] = None,
                   **kwargs: Any) -> caffe2_pb2.OperatorDef:
    """An OperatorDef; kwargs become Arguments, the DeviceScope fills a missing device."""
    op = caffe2_pb2.OperatorDef()
    op.type = operator_type
    op.name = name
    op.input.extend(_name_list(inputs))
    op.output.extend(_name_list(outputs))
    op.control_input.extend(_name_list(control_input))
    if device_option is not None:
        op.device_option.CopyFrom(device_option)
    elif CurrentDeviceScope() is not None:
        op.device_option.CopyFrom(CurrentDeviceScope())
    if engine is not None:
        op.engine = engine
    if debug_info is not None:
        op.debug_info = debug_info
    if "random_seed" in kwargs:
        op.device_option.random_seed = kwargs.pop("random_seed")
    if arg is not None:
        op.arg.extend([arg] if isinstance(arg, caffe2_pb2.Argument) else arg)
    for key, value in kwargs.items():
        if value is not None:
            op.arg.append(MakeArgument(key, value))
    return op


# ---------------------------------------------------------------------------------------------
# blob references and nets
# ---------------------------------------------------------------------------------------------
class BlobReference:
    """A blob name bound to the net that defines it; ``ref.Relu()`` adds an op to that net."""

    def __init__(self, name: Union[str, bytes], net: Optional["Net"] = None) -> None:
        self._name = name.decode() if isinstance(name, bytes) else str(name)
        self._from_net = net

    def __str__(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"BlobReference(\"{self._name}\")"

    def __hash__(self) -> int:
        return hash(self._name)

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, BlobReference):
            return self._name == other._name
        if isinstance(other, str):
            return self._name == other
        return NotImplemented

    def __ne__(self, other: Any) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __add__(self, other: Any) -> str:
        return self._name + str(other)

    def __radd__(self, other: Any) -> str:
        return str(other) + self._name

    def Net(self) -> Optional["Net"]:
        return self._from_net

    def GetNameScope(self) -> str:
        return self._name[: self._name.rfind(_NAMESCOPE_SEPARATOR) + 1]

    def GetUnscopedName(self) -> str:
        return self._name[self._name.rfind(_NAMESCOPE_SEPARATOR) + 1:]

    def __getattr__(self, op_type: str) -> Any:
        if op_type.startswith("__"):
            raise AttributeError(op_type)
        if self._from_net is None:
            raise AttributeError(f"You cannot use a blob reference that does not have a net "
                                 f"source to create operators ({op_type}).")
        net = self._from_net
        method = getattr(net, op_type)

        def call(inputs: Any = None, *args: Any, **kwargs: Any) -> Any:
            extra = _name_list(inputs, scoped=False) if inputs is not None else []
            return method([self] + extra, *args, **kwargs)
        return call


def ScopedBlobReference(name: str, *args: Any, **kwargs: Any) -> BlobReference:
    return BlobReference(ScopedName(name), *args, **kwargs)


_used_net_names: set[str] = set()
_net_names_lock = threading.Lock()


def _unique_net_name(name: str) -> str:
    """Net names are process-unique: a second ``Net("net")`` is named ``net_1``."""
    with _net_names_lock:
        candidate = name
        for i in itertools.count(1):
            if candidate not in _used_net_names:
                break
            candidate = f"{name}_{i}"
        _used_net_names.add(candidate)
        return candidate


class Net:
    """A NetDef under construction."""

    def __init__(self, name_or_proto: Union[str, caffe2_pb2.NetDef, "Net"]) -> None:
        self._net = caffe2_pb2.NetDef()
        if isinstance(name_or_proto, Net):
            name_or_proto = name_or_proto.Proto()
        if isinstance(name_or_proto, caffe2_pb2.NetDef):
            self._net.CopyFrom(name_or_proto)
            self._net.name = _unique_net_name(self._net.name)
        else:
            self._net.name = _unique_net_name(str(name_or_proto))
        self._defined: set[str] = set(self._net.external_input)
        for op in self._net.op:
            self._defined.update(op.output)
        self._next_name = itertools.count()

    # -- identity ---------------------------------------------------------------------------
    def Name(self) -> str:
        return self._net.name

    def Proto(self) -> caffe2_pb2.NetDef:
        return self._net

    def __str__(self) -> str:
        return self.Name()

    def __repr__(self) -> str:
        return f"<core.Net '{self.Name()}' with {len(self._net.op)} ops>"

    # -- blobs ------------------------------------------------------------------------------
    def BlobIsDefined(self, blob: Any) -> bool:
        return str(blob) in self._defined

    def UsesBlob(self, blob: Any) -> bool:
        name = str(blob)
        return any(name in op.input or name in op.output for op in self._net.op) or \
            name in self._net.external_input

    def GetBlobRef(self, blob_name: str) -> BlobReference:
        if not self.BlobIsDefined(blob_name):
            raise KeyError(f"Net does not define blob {blob_name}")
        return BlobReference(blob_name, self)

    def NextName(self, prefix: Optional[str] = None, output_id: Optional[int] = None) -> str:
        """A fresh blob name: ``<net>/<prefix>[:id]`` (``_2``... on clashes)."""
        if prefix:
            base = f"{self._net.name}/{prefix}"
            suffix = f":{output_id}" if output_id is not None else ""
            name = ScopedName(base + suffix)
            index = 2
            while self.BlobIsDefined(name):
                name = ScopedName(f"{base}_{index}{suffix}")
                index += 1
            return name
        while True:
            name = f"{self._net.name}_blob_{next(self._next_name)}"
            if not self.BlobIsDefined(name):
                return name

    def NextBlob(self, prefix: Optional[str] = None) -> BlobReference:
        return BlobReference(self.NextName(prefix), self)

    def NextScopedBlob(self, prefix: Optional[str] = None) -> BlobReference:
        return BlobReference(self.NextName(prefix), self)

    def AddExternalInput(self, *inputs: Any) -> Any:
        refs = []
        for blob in inputs:
            for name in _name_list(blob, scoped=False):
                if name in self._net.external_input:
                    raise AssertionError(f"Net already contains an input named {name}")
                self._net.external_input.append(name)
                self._defined.add(name)
                refs.append(BlobReference(name, self))
        return refs[0] if len(refs) == 1 else refs

    AddExternalInputs = AddExternalInput

    def AddExternalOutput(self, *outputs: Any) -> None:
        for blob in outputs:
            for name in _name_list(blob, scoped=False):
                if not self.BlobIsDefined(name):
                    raise AssertionError(f"{name} is not defined")
                self._net.external_output.append(name)

    AddExternalOutputs = AddExternalOutput

    @property
    def external_inputs(self) -> list[BlobReference]:
        return [BlobReference(n, self) for n in self._net.external_input]

    @property
    def external_outputs(self) -> list[BlobReference]:
        return [BlobReference(n, self) for n in self._net.external_output]

    def AddArgument(self, name: str, value: Any) -> None:
        self._net.arg.append(MakeArgument(name, value))

    def RunAllOnGPU(self, gpu_id: int = 0, use_cudnn: bool = False) -> None:
        self._net.device_option.CopyFrom(DeviceOption(CUDA, gpu_id))
        if use_cudnn:
            for op in self._net.op:
                op.engine = "CUDNN"

    def Clone(self, name: str, blob_remap: Optional[dict] = None,
              op_id_mask: Optional[Iterable[int]] = None, keep_schema: bool = True) -> "Net":
        """A copy under a new name, optionally renaming blobs and keeping only some ops."""
        proto = copy.deepcopy(self._net)
        proto.name = name
        if op_id_mask is not None:
            keep = [proto.op[i] for i in op_id_mask]
            del proto.op[:]
            proto.op.extend(keep)
        remap = {str(k): str(v) for k, v in (blob_remap or {}).items()}
        if remap:
            for op in proto.op:
                for field in (op.input, op.output, op.control_input):
                    field[:] = [remap.get(b, b) for b in field]
            for field in (proto.external_input, proto.external_output):
                field[:] = [remap.get(b, b) for b in field]
        return Net(proto)

    def Const(self, array: Any, blob_out: Any = None, dtype: Any = None) -> BlobReference:
        """A GivenTensor*Fill op holding ``array``."""
        array = np.asarray(array, dtype=dtype)
        fill = {np.dtype(np.float32): "GivenTensorFill", np.dtype(np.float64):
                "GivenTensorDoubleFill", np.dtype(np.int32): "GivenTensorIntFill",
                np.dtype(np.int64): "GivenTensorInt64Fill", np.dtype(bool):
                "GivenTensorBoolFill"}.get(array.dtype)
        if fill is None:
            if array.dtype.kind in "SUO":
                fill = "GivenTensorStringFill"
            else:
                raise EnforceError(f"Const: unsupported dtype {array.dtype}")
        values = array.flatten()
        if fill == "GivenTensorStringFill":
            values = [str(v) for v in values]
        return self.__getattr__(fill)([], blob_out or 1, shape=list(array.shape),
                                      values=values)

    # -- gradients --------------------------------------------------------------------------
    def AddGradientOperators(self, ys: Any, skip: int = 0) -> dict:
        """Append the backward pass for ``ys`` to this net; return blob -> gradient."""
        from c2lite.gradient import GradientRegistry
        ops = list(self._net.op)
        if isinstance(ys, (str, BlobReference)):
            ys = [ys]
        if isinstance(ys, (list, tuple)):
            ys = [str(y) for y in ys]
        elif isinstance(ys, dict):
            ys = {str(k): v for k, v in ys.items()}
        grad_ops, grad_map = GradientRegistry.GetBackwardPass(ops[skip:], ys)
        self._net.op.extend(grad_ops)
        for op in grad_ops:
            self._defined.update(op.output)
        return grad_map

    # -- operators --------------------------------------------------------------------------
    def __getattr__(self, op_type: str) -> Any:
        if op_type.startswith("__"):
            raise AttributeError(op_type)
        if not IsOperator(op_type):
            known = registered_operators() | set(schemas())
            raise AttributeError(f"Method {op_type} is not a registered operator. Did you "
                                 f"mean: [{', '.join(nearest_names(op_type, known))}]")
        return lambda *args, **kwargs: self._CreateAndAddToSelf(op_type, *args, **kwargs)

    def _CreateAndAddToSelf(self, op_type: str, inputs: Any, outputs: Any = None,
                            **kwargs: Any) -> Any:
        in_names = _name_list(inputs)
        for name in in_names:
            if not self.BlobIsDefined(name):
                self.AddExternalInput(name)
        if outputs is None:
            out_names = [self.NextName(prefix=op_type)]
        elif isinstance(outputs, int):
            out_names = [self.NextName(prefix=op_type, output_id=i) for i in range(outputs)]
        else:
            out_names = _name_list(outputs)
        op = CreateOperator(op_type, in_names, out_names, **kwargs)
        self._net.op.append(op)
        self._defined.update(out_names)
        refs = tuple(BlobReference(n, self) for n in out_names)
        if not refs:
            return None
        return refs[0] if len(refs) == 1 else refs


# ---------------------------------------------------------------------------------------------
# plans
# ---------------------------------------------------------------------------------------------
class ExecutionStep:
    """An ExecutionStep proto under construction."""

    def __init__(self, name: str, nets: Any = None, num_iter: Optional[int] = None) -> None:
        self._step = caffe2_pb2.ExecutionStep()
        self._step.name = name or "step"
        self._nets: list[Net] = []
        self._substeps: list[ExecutionStep] = []
        for net in _as_list(nets):
            self.AddNet(net)
        if num_iter is not None:
            self._step.num_iter = num_iter

    def Proto(self) -> caffe2_pb2.ExecutionStep:
        return self._step

    def Name(self) -> str:
        return self._step.name

    def AddNet(self, net: Net) -> None:
        self._nets.append(net)
        self._step.network.append(net.Name())

    def AddSubstep(self, substep: "ExecutionStep") -> None:
        self._substeps.append(substep)
        self._step.substep.add().CopyFrom(substep.Proto())

    def SetIter(self, num_iter: int) -> None:
        self._step.num_iter = num_iter

    def SetConcurrentSubSteps(self, flag: bool) -> None:
        self._step.concurrent_substeps = flag

    def SetShouldStopBlob(self, blob: Any) -> None:
        self._step.should_stop_blob = str(blob)

    def SetOnlyOnce(self, flag: bool) -> None:
        self._step.only_once = flag

    def SetCreateWorkspace(self, flag: bool) -> None:
        self._step.create_workspace = flag

    def get_all_nets(self) -> list[Net]:
        nets = list(self._nets)
        for sub in self._substeps:
            nets.extend(sub.get_all_nets())
        return nets


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def execution_step(name: str, steps_or_nets: Any, num_iter: Optional[int] = None,
                   report_net: Any = None, report_interval: Optional[int] = None,
                   concurrent_substeps: Optional[bool] = None, should_stop_blob: Any = None,
                   only_once: Optional[bool] = None, num_concurrent_instances: Optional[int] = None,
                   create_workspace: bool = False, run_every_ms: Optional[int] = None
                   ) -> ExecutionStep:
    """Build a step from nets or substeps (not both), as caffe2.python.core.execution_step."""
    assert not (num_iter is not None and should_stop_blob is not None), \
        "Must not specify both num_iter and should_stop_blob"
    if num_iter is None and should_stop_blob is None:
        num_iter = 1
    step = ExecutionStep(name)
    items = _as_list(steps_or_nets)
    if items and all(isinstance(i, Net) for i in items):
        for net in items:
            step.AddNet(net)
    elif items and all(isinstance(i, ExecutionStep) for i in items):
        for sub in items:
            step.AddSubstep(sub)
    elif items:
        raise ValueError("execution_step takes either nets or execution steps, not a mix")
    proto = step.Proto()
    if num_iter is not None:
        proto.num_iter = num_iter
    if should_stop_blob is not None:
        proto.should_stop_blob = str(should_stop_blob)
    if only_once is not None:
        proto.only_once = only_once
    if concurrent_substeps is not None:
        proto.concurrent_substeps = concurrent_substeps
    if num_concurrent_instances is not None:
        proto.num_concurrent_instances = num_concurrent_instances
    if report_net is not None:
        proto.report_net = report_net.Name() if isinstance(report_net, Net) else str(report_net)
        if isinstance(report_net, Net):
            step._nets.append(report_net)
    if report_interval is not None:
        proto.report_interval = report_interval
    if create_workspace:
        proto.create_workspace = True
    if run_every_ms is not None:
        proto.run_every_ms = run_every_ms
    return step


class Plan:
    """A PlanDef under construction; nets of added steps are added once each."""

    def __init__(self, name_or_step: Union[str, ExecutionStep]) -> None:
        self._plan = caffe2_pb2.PlanDef()
        self._net_names: set[str] = set()
        if isinstance(name_or_step, ExecutionStep):
            self._plan.name = name_or_step.Name()
            self.AddStep(name_or_step)
        else:
            self._plan.name = str(name_or_step)

    def Proto(self) -> caffe2_pb2.PlanDef:
        return self._plan

    def AddNets(self, nets: Iterable[Net]) -> None:
        for net in nets:
            if net.Name() not in self._net_names:
                self._net_names.add(net.Name())
                self._plan.network.add().CopyFrom(net.Proto())

    def AddStep(self, step: ExecutionStep) -> None:
        self._plan.execution_step.add().CopyFrom(step.Proto())
        self.AddNets(step.get_all_nets())

    def Steps(self) -> list:
        return list(self._plan.execution_step)


# ---------------------------------------------------------------------------------------------
# devices across a net
# ---------------------------------------------------------------------------------------------
def InferOpBlobDevicesAsDict(op: caffe2_pb2.OperatorDef) -> tuple[dict, dict]:
    """Every input and output on the op's own device (Caffe2's default inference)."""
    option = op.device_option if op.HasField("device_option") else caffe2_pb2.DeviceOption()
    return ({b: option for b in op.input}, {b: option for b in op.output})


def InferOpBlobDevices(op: caffe2_pb2.OperatorDef) -> tuple[list, list]:
    ins, outs = InferOpBlobDevicesAsDict(op)
    return list(ins.values()), list(outs.values())


def _device_key(option: Any) -> tuple:
    return (0, 0) if option.device_type == CPU else (option.device_type, option.device_id)


def InjectCrossDeviceCopies(net: Union[Net, caffe2_pb2.NetDef],
                            blob_to_device: Optional[dict] = None,
                            blob_remap: Optional[dict] = None) -> tuple[Net, dict]:
    """A copy of ``net`` with CopyCPUToGPU / CopyGPUToCPU / Copy ops inserted wherever an op
    reads a blob that lives on another device. Returns (new net, blob -> DeviceOption)."""
    proto = net.Proto() if isinstance(net, Net) else net
    default = proto.device_option if proto.HasField("device_option") else \
        caffe2_pb2.DeviceOption()
    where = dict(blob_to_device or {})
    for name in proto.external_input:
        where.setdefault(name, default)
    out = caffe2_pb2.NetDef()
    out.CopyFrom(proto)
    del out.op[:]
    copies: dict[tuple, str] = {}
    for op in proto.op:
        option = op.device_option if op.HasField("device_option") else default
        new_op = copy.deepcopy(op)
        schema = get_schema(op.type)
        for i, blob in enumerate(op.input):
            have = where.get(blob)
            if have is None or (schema is not None and schema.inputs_can_cross_devices) or \
                    _device_key(have) == _device_key(option):
                continue
            key = (blob, _device_key(option))
            if key not in copies:
                suffix = "cpu" if option.device_type == CPU else \
                    f"gpu_{option.device_id}"
                copy_name = f"{blob}_{suffix}"
                if have.device_type == CPU:
                    kind = "CopyCPUToGPU"
                elif option.device_type == CPU:
                    kind = "CopyGPUToCPU"
                else:
                    kind = "Copy"
                copy_op = CreateOperator(kind, [blob], [copy_name], device_option=option)
                out.op.append(copy_op)
                copies[key] = copy_name
                where[copy_name] = option
            new_op.input[i] = copies[key]
        out.op.append(new_op)
        for blob in op.output:
            where[blob] = option
    return Net(out), where


# The gradient registry lives in c2lite.gradient; re-exported here as caffe2.python.core does.
def __getattr__(name: str) -> Any:
    if name in ("GradientRegistry", "GradientSlice", "IR"):
        from c2lite import gradient
        return getattr(gradient, name)
    raise AttributeError(f"module 'c2lite.core' has no attribute '{name}'")
