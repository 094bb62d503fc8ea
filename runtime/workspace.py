"""Workspaces: named blobs and created nets (reference §2.2), plus Caffe2's function API.

:class:`Workspace` is an explicit object with no global state. Below it, the
``caffe2.python.workspace`` functions (``FeedBlob``, ``RunNetOnce``...) act on a current named
workspace and are each one call into it, so legacy scripts port by changing their imports.
"""
from __future__ import annotations

import threading
from typing import Any, Iterable, Optional, Union

import numpy as np

from c2lite.device import CPU, device_of_option, device_of_value, to_device, to_host
from c2lite.errors import EnforceError


def _proto_of(obj: Any) -> Any:
    """A NetDef/PlanDef/OperatorDef from a proto or a front-end object with ``Proto()``."""
    return obj.Proto() if hasattr(obj, "Proto") else obj


class Workspace:
    """Blobs by name, nets by name, and an optional parent read through for missing names."""

    def __init__(self, name: str = "", parent: Optional["Workspace"] = None,
                 root_folder: str = ".") -> None:
        self.name = name
        self.parent = parent
        self.root_folder = root_folder
        self._blobs: dict[str, Any] = {}
        self._nets: dict[str, Any] = {}
        self._lock = threading.RLock()

    # -- blobs ------------------------------------------------------------------------------
    def has_blob(self, name: str) -> bool:
        return name in self._blobs or (self.parent is not None and self.parent.has_blob(name))

    def _owner(self, name: str) -> Optional["Workspace"]:
        ws: Optional[Workspace] = self
        while ws is not None:
            if name in ws._blobs:
                return ws
            ws = ws.parent
        return None

    def blobs(self) -> list[str]:
        """Every visible blob name, sorted (local and parents')."""
        names = set(self._blobs)
        if self.parent is not None:
            names.update(self.parent.blobs())
        return sorted(names)

    def local_blobs(self) -> list[str]:
        return sorted(self._blobs)

    def create_blob(self, name: str) -> None:
        """Idempotent; a name that exists in a parent stays the parent's blob."""
        with self._lock:
            if not self.has_blob(name):
                self._blobs[name] = None

    def create_local_blob(self, name: str) -> None:
        with self._lock:
            self._blobs.setdefault(name, None)

    def get_blob(self, name: str) -> Any:
        """The stored value itself (no copy); raise if the blob does not exist."""
        try:
            return self._blobs[name]
        except KeyError:
            owner = self._owner(name)
            if owner is None:
                raise EnforceError(f"Can't find blob: {name}", blob=name) from None
            return owner._blobs[name]

    def set_blob(self, name: str, value: Any) -> None:
        """Store ``value`` as-is where the blob lives (locally when new)."""
        if name in self._blobs or self.parent is None:
            self._blobs[name] = value
            return
        owner = self._owner(name) or self
        owner._blobs[name] = value

    def feed_blob(self, name: str, value: Any, device_option: Any = None) -> bool:
        """Copy ``value`` into blob ``name`` on the given device (CPU by default)."""
        try:
            value = _as_blob_value(value)
        except EnforceError as exc:
            if exc.blob is None:  # say which blob the bad value was meant for
                exc.blob = name
                exc.args = (exc._render(),)
            raise
        device = device_of_option(device_option)
        if device.type != CPU and isinstance(value, np.ndarray):
            value = to_device(value, device)
        elif isinstance(value, np.ndarray):
            value = np.array(value, copy=True)
        elif device_of_value(value) is not None and device.type == CPU:
            value = to_host(value)
        with self._lock:
            self.set_blob(name, value)
        return True

    def fetch_blob(self, name: str) -> Any:
        """A NumPy copy of the blob (CUDA blobs are copied to the host); str blobs as-is."""
        value = self.get_blob(name)
        if value is None:
            raise EnforceError(f"Blob {name} is empty (created but never written)", blob=name)
        if isinstance(value, (str, bytes)):
            return value
        if isinstance(value, np.ndarray) or device_of_value(value) is not None:
            return to_host(value)
        return value

    def remove_blob(self, name: str) -> bool:
        with self._lock:
            return self._blobs.pop(name, _ABSENT) is not _ABSENT

    def rename_blob(self, old: str, new: str) -> None:
        with self._lock:
            if old not in self._blobs:
                raise EnforceError(f"Blob {old} is not a local blob of this workspace", blob=old)
            if self.has_blob(new):
                raise EnforceError(f"Blob {new} already exists", blob=new)
            self._blobs[new] = self._blobs.pop(old)

    def reset(self) -> None:
        """Drop every local blob and net."""
        with self._lock:
            self._blobs.clear()
            self._nets.clear()

    # -- nets -------------------------------------------------------------------------------
    def create_net(self, net: Any, overwrite: bool = False) -> Any:
        """Build a net from a NetDef (or ``core.Net``) and keep it under its name."""
        from c2lite.net import create_net
        net_def = _proto_of(net)
        if not net_def.name:
            raise EnforceError("Net definition should have a name.")
        with self._lock:
            if net_def.name in self._nets:
                if not overwrite:
                    raise EnforceError(
                        "I respectfully refuse to overwrite an existing net of the same name "
                        f"\"{net_def.name}\", unless you explicitly specify overwrite=true.")
                del self._nets[net_def.name]
            built = create_net(net_def, self)
            self._nets[net_def.name] = built
        return built

    def get_net(self, name: str) -> Any:
        net = self._nets.get(name)
        if net is None:
            raise EnforceError(f"Net {name} does not exist in workspace '{self.name}'. "
                               f"Created nets: {sorted(self._nets)}")
        return net

    def nets(self) -> list[str]:
        return sorted(self._nets)

    def delete_net(self, name: str) -> bool:
        with self._lock:
            return self._nets.pop(name, None) is not None

    def run_net(self, name: str, num_iter: int = 1, allow_fail: bool = False) -> bool:
        """Run a created net ``num_iter`` times; errors raise unless ``allow_fail``."""
        net = self.get_net(_proto_of(name).name if not isinstance(name, str) else name)
        try:
            for _ in range(num_iter):
                net.run()
        except EnforceError:
            if allow_fail:
                return False
            raise
        return True

    def run_net_once(self, net: Any) -> bool:
        """Build a temporary net, run it once, and discard it."""
        from c2lite.net import create_net
        create_net(_proto_of(net), self).run()
        return True

    def run_operator_once(self, op_def: Any) -> bool:
        """Create and run one operator with its own device option."""
        from c2lite.net import run_single_operator
        run_single_operator(_proto_of(op_def), self)
        return True

    def run_plan(self, plan: Any) -> bool:
        from c2lite.plan import run_plan
        return run_plan(_proto_of(plan), self)

    def __repr__(self) -> str:
        return f"<Workspace '{self.name}': {len(self._blobs)} blobs, {len(self._nets)} nets>"


_ABSENT = object()


def _as_blob_value(value: Any) -> Any:
    """Normalise a fed value: strings stay strings, TensorProtos and lists become arrays."""
    if isinstance(value, (str, bytes)):
        return value
    if not isinstance(value, np.ndarray) and device_of_value(value) is not None:
        return value  # already a device array (CuPy)
    if type(value).__name__ == "TensorProto":
        from c2lite.serialization import tensor_to_numpy
        return tensor_to_numpy(value)
    arr = np.asarray(value)
    if arr.dtype.kind in "SU":
        arr = arr.astype(object)
    return arr


# ---------------------------------------------------------------------------------------------
# caffe2.python.workspace: the same operations over a current, named, process-global workspace.
# ---------------------------------------------------------------------------------------------

_workspaces: dict[str, Workspace] = {"default": Workspace("default")}
_current = "default"
_global_lock = threading.Lock()


def C() -> Workspace:
    """The current Workspace object (the explicit object behind the functions below)."""
    return _workspaces[_current]


def CurrentWorkspace() -> str:
    return _current


def Workspaces() -> list[str]:
    return sorted(_workspaces)


def SwitchWorkspace(name: Union[str, bytes], create_if_missing: Optional[bool] = None) -> None:
    global _current
    name = name.decode() if isinstance(name, bytes) else name
    with _global_lock:
        if name not in _workspaces:
            if not create_if_missing:
                raise EnforceError(f"Workspace {name} does not exist (create_if_missing=False)")
            _workspaces[name] = Workspace(name)
        _current = name


def ResetWorkspace(root_folder: Optional[str] = None) -> bool:
    old = C()
    _workspaces[_current] = Workspace(_current, root_folder=root_folder or old.root_folder)
    return True


def RootFolder() -> str:
    return C().root_folder


def FeedBlob(name: Any, arr: Any, device_option: Any = None) -> bool:
    if device_option is None:
        from c2lite.core import CurrentDeviceScope
        device_option = CurrentDeviceScope()
    return C().feed_blob(StringifyBlobName(name), arr, device_option)


def FetchBlob(name: Any) -> Any:
    return C().fetch_blob(StringifyBlobName(name))


def FetchBlobs(names: Iterable[Any]) -> list:
    return [FetchBlob(n) for n in names]


def HasBlob(name: Any) -> bool:
    return C().has_blob(StringifyBlobName(name))


def Blobs() -> list[str]:
    return C().blobs()


def CreateBlob(name: Any) -> bool:
    C().create_blob(StringifyBlobName(name))
    return True


def ResetBlob(name: Any) -> bool:
    C().set_blob(StringifyBlobName(name), None)
    return True


def RemoveBlob(name: Any) -> bool:
    return C().remove_blob(StringifyBlobName(name))


def CreateNet(net: Any, overwrite: bool = False, input_blobs: Optional[Iterable] = None) -> bool:
    for blob in input_blobs or ():
        CreateBlob(blob)
    net_def = _parse_if_bytes(net, "NetDef")
    C().create_net(net_def, overwrite)
    return True


def RunNet(name: Any, num_iter: int = 1, allow_fail: bool = False) -> bool:
    return C().run_net(GetNetName(name), num_iter, allow_fail)


def RunNetOnce(net: Any) -> bool:
    return C().run_net_once(_parse_if_bytes(net, "NetDef"))


def RunOperatorOnce(op: Any) -> bool:
    return C().run_operator_once(_parse_if_bytes(op, "OperatorDef"))


def RunOperatorsOnce(ops: Iterable[Any]) -> bool:
    return all(RunOperatorOnce(op) for op in ops)


def RunPlan(plan_or_step: Any) -> bool:
    from c2lite.core import ExecutionStep, Plan
    if isinstance(plan_or_step, ExecutionStep):
        plan = Plan(plan_or_step.Proto().name or "plan")
        plan.AddStep(plan_or_step)
        plan_or_step = plan
    return C().run_plan(_parse_if_bytes(plan_or_step, "PlanDef"))


_DTYPE_CODES = {"float32": 1, "int32": 2, "uint8": 6, "bool": 5, "int8": 7, "uint16": 8,
                "int16": 9, "int64": 10, "float16": 12, "float64": 13, "object": 4}


def InferShapesAndTypes(nets: Iterable[Any], blob_dimensions: Optional[dict] = None,
                        blob_types: Optional[dict] = None) -> tuple[dict, dict]:
    """Walk the nets' ops through their schemas' inference functions.

    Starts from ``blob_dimensions``/``blob_types`` (or, without them, the current workspace's
    tensors) and returns ``(shapes, types)``: blob -> list of dims, blob -> TensorProto
    DataType. Blobs whose shape no schema can tell are left out.
    """
    from c2lite.schema import get_schema
    known: dict[str, tuple] = {}
    if blob_dimensions is None:
        for name in Blobs():
            value = C().get_blob(name)
            if hasattr(value, "shape") and hasattr(value, "dtype"):
                known[name] = (tuple(value.shape), np.dtype(value.dtype).name)
    else:
        codes = {v: k for k, v in _DTYPE_CODES.items()}
        for name, dims in blob_dimensions.items():
            code = (blob_types or {}).get(name, 1)
            known[name] = (tuple(dims), codes.get(code, "float32"))
    for net in nets:
        for op in _parse_if_bytes(net, "NetDef").op:
            schema = get_schema(op.type)
            if schema is None:
                continue
            ins = [known.get(b, (None, None)) for b in op.input]
            if op.type == "Sum":  # autosplit gradient blobs borrow a sibling's shape
                ins = [next((i for i in ins if i[0] is not None), (None, None))] * len(ins)
            try:
                outs = schema.infer(op, ins)
            except Exception:  # noqa: BLE001 - as in Caffe2, a failing function is ignored
                continue
            for blob, (dims, dtype) in zip(op.output, outs):
                if dims is not None:
                    known[blob] = (tuple(dims), dtype or known.get(blob, (None, None))[1])
    shapes = {b: list(d) for b, (d, _) in known.items() if d is not None}
    types = {b: _DTYPE_CODES.get(np.dtype(t).name if t else "float32", 1)
             for b, (d, t) in known.items() if d is not None}
    return shapes, types


def RegisteredOperators() -> list[str]:
    from c2lite.registry import registered_operators
    return sorted(registered_operators())


def has_gpu_support() -> bool:
    from c2lite.device import has_gpu_support as _has
    return _has()


def NumCudaDevices() -> int:
    from c2lite.device import num_cuda_devices
    return num_cuda_devices()


def StringifyProto(obj: Any) -> Union[str, bytes]:
    """str/bytes pass through; protos and objects with ``Proto()`` are serialized."""
    if isinstance(obj, (str, bytes)):
        return obj
    if hasattr(obj, "SerializeToString"):
        return obj.SerializeToString()
    if hasattr(obj, "Proto"):
        return obj.Proto().SerializeToString()
    raise ValueError("Unexpected argument to StringifyProto of type " + type(obj).__name__)


def StringifyBlobName(name: Any) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def GetNetName(net: Any) -> str:
    if isinstance(net, (str, bytes)):
        return StringifyBlobName(net)
    if hasattr(net, "Name"):
        return net.Name()
    return _proto_of(net).name


StringifyNetName = GetNetName


def _parse_if_bytes(obj: Any, message: str) -> Any:
    if isinstance(obj, bytes):
        from c2lite.proto import caffe2_pb2
        from c2lite.serialization import parse_proto
        return parse_proto(obj, getattr(caffe2_pb2, message))
    return _proto_of(obj)


class _BlobsView:
    """``workspace.blobs['x']`` / ``workspace.blobs['x'] = arr`` over the current workspace."""

    def __getitem__(self, name: Any) -> Any:
        return FetchBlob(name)

    def __setitem__(self, name: Any, value: Any) -> None:
        FeedBlob(name, value)

    def __contains__(self, name: Any) -> bool:
        return HasBlob(name)

    def __iter__(self):
        return iter(Blobs())

    def __len__(self) -> int:
        return len(Blobs())

    def keys(self) -> list[str]:
        return Blobs()


blobs = _BlobsView()
