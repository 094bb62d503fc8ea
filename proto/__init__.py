"""Caffe2-compatible protobuf schema (caffe2.proto) and its generated module caffe2_pb2.

Legacy Caffe2 code spells device kinds without the ``PROTO_`` prefix
(``caffe2_pb2.CPU``, ``caffe2_pb2.CUDA``); those aliases are added onto the generated
module here, so ``from c2lite.proto import caffe2_pb2; caffe2_pb2.CUDA == 1`` holds.
"""
from __future__ import annotations

from c2lite.proto import caffe2_pb2

#: Legacy alias -> DeviceTypeProto value name.
DEVICE_ALIASES: dict[str, str] = {
    name[len("PROTO_"):]: name for name in caffe2_pb2.DeviceTypeProto.keys()
}

for _alias, _name in DEVICE_ALIASES.items():
    setattr(caffe2_pb2, _alias, caffe2_pb2.DeviceTypeProto.Value(_name))
del _alias, _name

__all__ = ["caffe2_pb2", "DEVICE_ALIASES"]
