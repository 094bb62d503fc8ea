"""c2lite: a small Caffe2-style operator runtime."""
from c2lite.errors import DeviceError, EnforceError, GradientError, ProtoError, SchemaError  # noqa: F401
from c2lite.serialization import load_net, load_plan, save_net, save_plan  # noqa: F401
