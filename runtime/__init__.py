"""c2lite: a small Caffe2-style operator runtime.

Reads Caffe2 protobuf nets, keeps a workspace of named blobs, resolves operators from per-device
registries (NumPy on CPU, CuPy on CUDA), and builds gradient graphs the way Caffe2 did.
"""
from c2lite.errors import (DeviceError, EnforceError, GradientError, ProtoError,  # noqa: F401
                           SchemaError)
from c2lite.workspace import Workspace  # noqa: F401
from c2lite.serialization import load_net, load_plan, save_net, save_plan  # noqa: F401
from c2lite import ops as _ops  # noqa: F401,E402  (registers every operator)

__version__ = "0.1.0"
