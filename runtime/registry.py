"""Per-device operator registries and CreateOperator (reference §2.5).

Keys are ``Type`` or ``Type_ENGINE_E``. An op's device comes from its own DeviceOption, else the
net's, else CPU. Engines fall back to the default engine on the same device, never to another
device.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Optional

from c2lite.device import CPU, CUDA, DEVICE_NAMES, Device, device_of_option, require_cuda
from c2lite.errors import DeviceError, EnforceError, SchemaError
from c2lite.operator import Operator, UnsupportedOperatorFeature
from c2lite.schema import get_schema

log = logging.getLogger("c2lite.registry")

#: device_type -> {registry key: Operator subclass}
_REGISTRIES: dict[int, dict[str, type]] = {CPU: {}, CUDA: {}}

#: Engine preferences: global per device type, and per (device type, op type).
_GLOBAL_ENGINE_PREF: dict[int, list[str]] = {CUDA: ["CUDNN"]}
_PER_OP_ENGINE_PREF: dict[int, dict[str, list[str]]] = {}


def op_registry_key(op_type: str, engine: str = "") -> str:
    """``Type`` for the default engine, else ``Type_ENGINE_<engine>``."""
    return op_type if engine in ("", "DEFAULT") else f"{op_type}_ENGINE_{engine}"


def register_operator(op_type: str, device: int = CPU,
                      engine: str = "") -> Callable[[type], type]:
    """Class decorator: register a kernel for ``op_type`` on ``device`` (and engine)."""
    def deco(cls: type) -> type:
        if get_schema(op_type) is None:
            raise EnforceError(f"Operator {op_type} has no schema: declare OPERATOR_SCHEMA "
                               "before registering a kernel")
        table = _REGISTRIES.setdefault(device, {})
        key = op_registry_key(op_type, engine)
        if key in table:
            raise EnforceError(f"Key already registered: {key} on {DEVICE_NAMES[device]}")
        table[key] = cls
        return cls
    return deco


def register_cpu(op_type: str, engine: str = "") -> Callable[[type], type]:
    return register_operator(op_type, CPU, engine)


def register_cuda(op_type: str, engine: str = "") -> Callable[[type], type]:
    return register_operator(op_type, CUDA, engine)


def register_cpu_cuda(op_type: str, engine: str = "") -> Callable[[type], type]:
    """Register one device-generic kernel (it computes with ``self.xp``) on CPU and CUDA."""
    def deco(cls: type) -> type:
        return register_cuda(op_type, engine)(register_cpu(op_type, engine)(cls))
    return deco


def registered_operators(device: Optional[int] = None) -> set[str]:
    """All registry keys (the union over devices, as Caffe2's GetRegisteredOperators)."""
    if device is not None:
        return set(_REGISTRIES.get(device, {}))
    return set().union(*(set(t) for t in _REGISTRIES.values()))


def has_implementation(op_type: str, device: int, engine: str = "") -> bool:
    return op_registry_key(op_type, engine) in _REGISTRIES.get(device, {})


def engines_of(op_type: str, device: int) -> list[str]:
    """Engines registered for ``op_type`` on ``device`` ("" is the default)."""
    prefix = op_type + "_ENGINE_"
    found = [k[len(prefix):] for k in _REGISTRIES.get(device, {}) if k.startswith(prefix)]
    return ([""] if op_type in _REGISTRIES.get(device, {}) else []) + sorted(found)


def set_engine_pref(per_op: dict, global_pref: dict) -> None:
    """Caffe2's SetEnginePref: {device_type: {op_type: [engines]}}, {device_type: [engines]}."""
    _PER_OP_ENGINE_PREF.clear()
    _PER_OP_ENGINE_PREF.update({int(k): {t: list(e) for t, e in v.items()}
                                for k, v in per_op.items()})
    _GLOBAL_ENGINE_PREF.clear()
    _GLOBAL_ENGINE_PREF.update({int(k): list(v) for k, v in global_pref.items()})


def engine_list(op_def: Any, device_type: int) -> list[str]:
    """Engines to try, in order: the op's own list, then per-op, then global preferences."""
    engines = [e for e in op_def.engine.split(",") if e] if op_def.engine else []
    engines += _PER_OP_ENGINE_PREF.get(device_type, {}).get(op_def.type, [])
    engines += _GLOBAL_ENGINE_PREF.get(device_type, [])
    return engines


def resolve_device(op_def: Any, net_device_option: Any = None) -> Device:
    """The op's DeviceOption if it has one, else the net's, else CPU."""
    if op_def.HasField("device_option"):
        return device_of_option(op_def.device_option)
    return device_of_option(net_device_option)


def verify_schema(op_def: Any) -> Any:
    """Run the op's schema check; raise SchemaError naming the rule. Returns the schema."""
    schema = get_schema(op_def.type)
    if schema is None:
        log.debug("Cannot find operator schema for %s. Will skip schema checking.", op_def.type)
        return None
    problem = schema.verify(op_def)
    if problem is not None:
        raise SchemaError(f"Operator def did not pass schema checking: {problem}")
    return schema


def create_operator(op_def: Any, ws: Any, net_device_option: Any = None) -> Operator:
    """Build the Operator for ``op_def`` in ``ws`` following Caffe2's CreateOperator."""
    schema = verify_schema(op_def)
    device = resolve_device(op_def, net_device_option)
    table = _REGISTRIES.get(device.type)
    if table is None:
        raise DeviceError(f"Device type {device.type} not registered.")
    candidates = [(op_registry_key(op_def.type, e), e) for e in engine_list(op_def, device.type)]
    candidates.append((op_def.type, ""))
    for key, engine in candidates:
        cls = table.get(key)
        if cls is None:
            continue
        if device.type == CUDA:
            require_cuda(device)
        try:
            op = cls(op_def, ws, device, engine)
        except UnsupportedOperatorFeature as exc:
            log.info("Engine %s cannot run %s: %s; trying the next one", engine, key, exc)
            continue
        op.cross_device_inputs = bool(schema and schema.inputs_can_cross_devices)
        return op
    raise DeviceError(_no_implementation_message(op_def.type, device))


def _no_implementation_message(op_type: str, device: Device) -> str:
    name = DEVICE_NAMES.get(device.type, str(device.type))
    msg = (f"Cannot create operator of type '{op_type}' on the device '{name}'. Verify that "
           "implementation for the corresponding device exist.")
    elsewhere = [DEVICE_NAMES[d] for d, t in _REGISTRIES.items() if op_type in t and d != device.type]
    if elsewhere:
        msg += f" It is registered on: {', '.join(elsewhere)}."
    elif get_schema(op_type) is None:
        close = nearest_names(op_type, registered_operators())
        msg += " No such operator is registered"
        msg += f"; did you mean: {', '.join(close)}?" if close else "."
    else:
        msg += " c2lite knows its schema but has no kernel for it on any device."
    return msg


def nearest_names(name: str, names: Iterable[str], n: int = 3) -> list[str]:
    import difflib
    return difflib.get_close_matches(name, sorted(names), n=n, cutoff=0.6)
