"""Devices: CPU blobs are NumPy arrays, CUDA blobs are CuPy arrays on one device id.

CuPy is imported lazily, the first time a CUDA device is actually touched, so a CPU-only install
never imports it. There are no implicit copies between devices anywhere in c2lite.
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple, Optional

import numpy as np

from c2lite.errors import DeviceError

CPU = 0
CUDA = 1

#: Names of DeviceTypeProto values, as Caffe2 printed them in its errors.
DEVICE_NAMES = {0: "CPU", 1: "CUDA", 2: "MKLDNN", 3: "OPENGL", 4: "OPENCL", 5: "IDEEP",
                6: "HIP", 7: "FPGA", 8: "MSNPU", 9: "XLA", 10: "MLC"}


class Device(NamedTuple):
    """Where a tensor lives: (device_type, device_id). CPU ignores the id."""
    type: int = CPU
    id: int = 0

    def __str__(self) -> str:
        name = DEVICE_NAMES.get(self.type, f"device type {self.type}")
        return name if self.type == CPU else f"{name}:{self.id}"


CPU_DEVICE = Device(CPU, 0)


def device_of_option(option: Any) -> Device:
    """The Device a DeviceOption (or None) names: CPU unless it says otherwise."""
    if option is None:
        return CPU_DEVICE
    dtype = int(getattr(option, "device_type", 0))
    if dtype == CPU:
        return CPU_DEVICE
    return Device(dtype, int(getattr(option, "device_id", 0)))


@functools.lru_cache(maxsize=1)
def cupy_module() -> Optional[Any]:
    """CuPy if it imports and sees at least one GPU, else None (cached)."""
    try:
        import cupy  # noqa: PLC0415 - imported lazily on purpose
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
        return cupy
    except Exception:  # ImportError, CUDA driver errors, missing libraries
        return None


def num_cuda_devices() -> int:
    """How many CUDA devices CuPy can see (0 without CuPy or a GPU)."""
    cp = cupy_module()
    return 0 if cp is None else int(cp.cuda.runtime.getDeviceCount())


def has_gpu_support() -> bool:
    return num_cuda_devices() > 0


def require_cuda(device: Device) -> Any:
    """CuPy, after checking that ``device`` exists; raise DeviceError otherwise."""
    cp = cupy_module()
    if cp is None:
        raise DeviceError(f"Device {device} is not available: no CUDA GPU or CuPy not installed "
                          "(install the 'cuda' extra on a machine with a GPU)")
    count = cp.cuda.runtime.getDeviceCount()
    if not 0 <= device.id < count:
        raise DeviceError(f"Device {device} does not exist: {count} CUDA device(s) visible")
    return cp


def array_module(device: Device) -> Any:
    """numpy for CPU, cupy for CUDA (the `xp` a kernel computes with)."""
    if device.type == CPU:
        return np
    if device.type == CUDA:
        return require_cuda(device)
    raise DeviceError(f"Device type {device.type} not registered.")


def device_of_value(value: Any) -> Optional[Device]:
    """The Device a blob value lives on, or None for non-tensor values (str, objects)."""
    if isinstance(value, np.ndarray):
        return CPU_DEVICE
    dev = getattr(value, "device", None)
    if dev is not None and type(value).__module__.startswith("cupy"):
        return Device(CUDA, int(dev.id))
    return None


def to_device(value: Any, device: Device) -> Any:
    """Place ``value`` (array-like) on ``device``: the explicit copy used by feeds and Copy ops."""
    if device.type == CPU:
        return to_host(value)
    cp = array_module(device)
    with cp.cuda.Device(device.id):
        return cp.array(value, copy=True)


def to_host(value: Any) -> Any:
    """A NumPy copy of ``value`` (CuPy arrays are copied to the host)."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if device_of_value(value) is not None and hasattr(value, "get"):
        return value.get()
    return np.array(value)


def same_device(a: Device, b: Device) -> bool:
    """Caffe2's device_option_equal for placement: CPU equals CPU; else type and id match."""
    return a.type == b.type and (a.type == CPU or a.id == b.id)
