"""The schema itself: field table, enums, legacy aliases, wire compatibility, staleness."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from c2lite.proto import caffe2_pb2

ROOT = Path(__file__).resolve().parent.parent
FDP = descriptor_pb2.FieldDescriptorProto

# ----------------------------------------------------------------------------------------
# The newest ("late") caffe2.proto, one row per field:
# (message, field, number, type, label, default, packed)
# type is the scalar type name or the full name of the message / enum type.
# ----------------------------------------------------------------------------------------
DT = "caffe2.TensorProto.DataType"
OPT, REP, REQ = "optional", "repeated", "required"
FIELDS = [
    ("TensorProto", "dims", 1, "int64", REP, None, False),
    ("TensorProto", "data_type", 2, DT, OPT, "FLOAT", False),
    ("TensorProto", "data_format", 15, "uint32", OPT, "0", False),
    ("TensorProto", "float_data", 3, "float", REP, None, True),
    ("TensorProto", "int32_data", 4, "int32", REP, None, True),
    ("TensorProto", "byte_data", 5, "bytes", OPT, None, False),
    ("TensorProto", "string_data", 6, "bytes", REP, None, False),
    ("TensorProto", "double_data", 9, "double", REP, None, True),
    ("TensorProto", "int64_data", 10, "int64", REP, None, True),
    ("TensorProto", "raw_data", 13, "bytes", OPT, None, False),
    ("TensorProto", "name", 7, "string", OPT, None, False),
    ("TensorProto", "device_detail", 8, "caffe2.DeviceOption", OPT, None, False),
    ("TensorProto", "segment", 11, "caffe2.TensorProto.Segment", OPT, None, False),
    ("TensorProto.Segment", "begin", 1, "int64", REQ, None, False),
    ("TensorProto.Segment", "end", 2, "int64", REQ, None, False),
    ("TensorProtos", "protos", 1, "caffe2.TensorProto", REP, None, False),
    ("TensorShape", "dims", 1, "int64", REP, None, False),
    ("TensorShape", "data_type", 2, DT, OPT, "FLOAT", False),
    ("TensorShape", "unknown_dims", 3, "int32", REP, None, False),
    ("TensorShape", "unknown_shape", 4, "bool", OPT, "false", False),
    ("TensorShape", "name", 5, "string", OPT, None, False),
    ("TensorShapes", "shapes", 1, "caffe2.TensorShape", REP, None, False),
    ("QTensorProto", "dims", 1, "int64", REP, None, False),
    ("QTensorProto", "precision", 2, "int32", REQ, None, False),
    ("QTensorProto", "scale", 3, "double", REQ, None, False),
    ("QTensorProto", "bias", 4, "double", REQ, None, False),
    ("QTensorProto", "is_signed", 5, "bool", REQ, None, False),
    ("QTensorProto", "data", 6, "int32", REP, None, True),
    ("QTensorProto", "name", 7, "string", OPT, None, False),
    ("QTensorProto", "data_type", 8, DT, OPT, "INT32", False),
    ("QTensorProto", "scales", 9, "double", REP, None, False),
    ("QTensorProto", "biases", 10, "double", REP, None, False),
    ("QTensorProto", "axis", 11, "int32", OPT, None, False),
    ("QTensorProto", "is_multiparam", 12, "bool", OPT, "false", False),
    ("TensorBoundShape", "shape", 1, "caffe2.TensorShape", OPT, None, False),
    ("TensorBoundShape", "dim_type", 2, "caffe2.TensorBoundShape.DimType", REP, None, False),
    ("TensorBoundShape", "name", 3, "string", OPT, None, False),
    ("TensorBoundShape", "shape_is_final", 4, "bool", OPT, None, False),
    ("TensorBoundShapes", "shapes", 1, "caffe2.TensorBoundShape", REP, None, False),
    ("TensorBoundShapes", "max_batch_size", 2, "int64", OPT, None, False),
    ("TensorBoundShapes", "max_feature_len", 3, "int64", OPT, None, False),
    ("AOTConfig", "max_batch_size", 1, "int64", REQ, None, False),
    ("AOTConfig", "max_seq_size", 2, "int64", REQ, None, False),
    ("AOTConfig", "in_batch_broadcast", 3, "bool", REQ, None, False),
    ("AOTConfig", "onnxifi_blacklist_ops", 4, "string", OPT, None, False),
    ("AOTConfig", "onnxifi_min_ops", 5, "int32", OPT, None, False),
    ("Argument", "name", 1, "string", OPT, None, False),
    ("Argument", "f", 2, "float", OPT, None, False),
    ("Argument", "i", 3, "int64", OPT, None, False),
    ("Argument", "s", 4, "bytes", OPT, None, False),
    ("Argument", "t", 10, "caffe2.TensorProto", OPT, None, False),
    ("Argument", "n", 8, "caffe2.NetDef", OPT, None, False),
    ("Argument", "floats", 5, "float", REP, None, False),
    ("Argument", "ints", 6, "int64", REP, None, False),
    ("Argument", "strings", 7, "bytes", REP, None, False),
    ("Argument", "tensors", 11, "caffe2.TensorProto", REP, None, False),
    ("Argument", "nets", 9, "caffe2.NetDef", REP, None, False),
    ("Argument", "qtensors", 12, "caffe2.QTensorProto", REP, None, False),
    ("DeviceOption", "device_type", 1, "int32", OPT, "0", False),
    ("DeviceOption", "device_id", 2, "int32", OPT, None, False),
    ("DeviceOption", "random_seed", 3, "uint32", OPT, None, False),
    ("DeviceOption", "node_name", 4, "string", OPT, None, False),
    ("DeviceOption", "numa_node_id", 5, "int32", OPT, None, False),
    ("DeviceOption", "extra_info", 6, "string", REP, None, False),
    ("OperatorDef", "input", 1, "string", REP, None, False),
    ("OperatorDef", "output", 2, "string", REP, None, False),
    ("OperatorDef", "name", 3, "string", OPT, None, False),
    ("OperatorDef", "type", 4, "string", OPT, None, False),
    ("OperatorDef", "arg", 5, "caffe2.Argument", REP, None, False),
    ("OperatorDef", "device_option", 6, "caffe2.DeviceOption", OPT, None, False),
    ("OperatorDef", "engine", 7, "string", OPT, None, False),
    ("OperatorDef", "control_input", 8, "string", REP, None, False),
    ("OperatorDef", "is_gradient_op", 9, "bool", OPT, "false", False),
    ("OperatorDef", "debug_info", 10, "string", OPT, None, False),
    ("OperatorDef", "domain", 11, "string", OPT, None, False),
    ("OperatorDef", "op_version", 12, "int64", OPT, None, False),
    ("MapFieldEntry", "key", 1, "string", REQ, None, False),
    ("MapFieldEntry", "val", 2, "string", REQ, None, False),
    ("BackendOptions", "backend_name", 1, "string", REQ, None, False),
    ("BackendOptions", "option", 2, "caffe2.MapFieldEntry", REP, None, False),
    ("PartitionInfo", "name", 1, "string", REQ, None, False),
    ("PartitionInfo", "device_id", 2, "int32", REP, None, False),
    ("PartitionInfo", "extra_info", 3, "string", OPT, None, False),
    ("PartitionInfo", "backend_options", 4, "caffe2.BackendOptions", REP, None, False),
    ("NetDef", "name", 1, "string", OPT, None, False),
    ("NetDef", "op", 2, "caffe2.OperatorDef", REP, None, False),
    ("NetDef", "type", 3, "string", OPT, None, False),
    ("NetDef", "num_workers", 4, "int32", OPT, None, False),
    ("NetDef", "device_option", 5, "caffe2.DeviceOption", OPT, None, False),
    ("NetDef", "arg", 6, "caffe2.Argument", REP, None, False),
    ("NetDef", "external_input", 7, "string", REP, None, False),
    ("NetDef", "external_output", 8, "string", REP, None, False),
    ("NetDef", "partition_info", 9, "caffe2.PartitionInfo", REP, None, False),
    ("ExecutionStep", "name", 1, "string", OPT, None, False),
    ("ExecutionStep", "substep", 2, "caffe2.ExecutionStep", REP, None, False),
    ("ExecutionStep", "network", 3, "string", REP, None, False),
    ("ExecutionStep", "num_iter", 4, "int64", OPT, None, False),
    ("ExecutionStep", "criteria_network", 5, "string", OPT, None, False),
    ("ExecutionStep", "concurrent_substeps", 6, "bool", OPT, None, False),
    ("ExecutionStep", "report_net", 7, "string", OPT, None, False),
    ("ExecutionStep", "report_interval", 8, "int32", OPT, None, False),
    ("ExecutionStep", "should_stop_blob", 9, "string", OPT, None, False),
    ("ExecutionStep", "only_once", 10, "bool", OPT, None, False),
    ("ExecutionStep", "run_every_ms", 11, "int64", OPT, None, False),
    ("ExecutionStep", "create_workspace", 12, "bool", OPT, None, False),
    ("ExecutionStep", "num_concurrent_instances", 13, "int32", OPT, None, False),
    ("PlanDef", "name", 1, "string", OPT, None, False),
    ("PlanDef", "network", 2, "caffe2.NetDef", REP, None, False),
    ("PlanDef", "execution_step", 3, "caffe2.ExecutionStep", REP, None, False),
    ("BlobProto", "name", 1, "string", OPT, None, False),
    ("BlobProto", "type", 2, "string", OPT, None, False),
    ("BlobProto", "tensor", 3, "caffe2.TensorProto", OPT, None, False),
    ("BlobProto", "content", 4, "bytes", OPT, None, False),
    ("BlobProto", "qtensor", 5, "caffe2.QTensorProto", OPT, None, False),
    ("BlobProto", "content_num_chunks", 6, "int32", OPT, None, False),
    ("BlobProto", "content_chunk_id", 7, "int32", OPT, None, False),
    ("DBReaderProto", "name", 1, "string", OPT, None, False),
    ("DBReaderProto", "source", 2, "string", OPT, None, False),
    ("DBReaderProto", "db_type", 3, "string", OPT, None, False),
    ("DBReaderProto", "key", 4, "string", OPT, None, False),
]

ENUMS = {
    "caffe2.TensorProto.DataType": {
        "UNDEFINED": 0, "FLOAT": 1, "INT32": 2, "BYTE": 3, "STRING": 4, "BOOL": 5, "UINT8": 6,
        "INT8": 7, "UINT16": 8, "INT16": 9, "INT64": 10, "FLOAT16": 12, "DOUBLE": 13,
        "ZERO_COLLISION_HASH": 14, "REBATCHING_BUFFER": 15},
    "caffe2.TensorProto.SerializationFormat": {"FMT_PROTOBUF": 0, "FMT_BFLOAT16": 1},
    "caffe2.DeviceTypeProto": {
        "PROTO_CPU": 0, "PROTO_CUDA": 1, "PROTO_MKLDNN": 2, "PROTO_OPENGL": 3,
        "PROTO_OPENCL": 4, "PROTO_IDEEP": 5, "PROTO_HIP": 6, "PROTO_FPGA": 7, "PROTO_MSNPU": 8,
        "PROTO_XLA": 9, "PROTO_MLC": 10, "PROTO_COMPILE_TIME_MAX_DEVICE_TYPES": 11},
    "caffe2.TensorBoundShape.DimType": {
        "UNKNOWN": 0, "CONSTANT": 1, "BATCH": 2, "BATCH_OF_FEATURE_MAX": 3,
        "BATCH_OF_FEATURE_MAX_DEFAULT": 4, "FEATURE_MAX": 5, "FEATURE_MAX_DEFAULT": 6},
}


def _file_proto() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto()
    caffe2_pb2.DESCRIPTOR.CopyToProto(fdp)
    return fdp


def _declared_messages() -> dict[str, descriptor_pb2.DescriptorProto]:
    """Every message of the file (nested ones as Outer.Inner), as declared."""
    out: dict[str, descriptor_pb2.DescriptorProto] = {}

    def visit(prefix: str, msgs) -> None:
        for m in msgs:
            out[prefix + m.name] = m
            visit(prefix + m.name + ".", m.nested_type)

    visit("", _file_proto().message_type)
    return out


def _type_of(f: descriptor_pb2.FieldDescriptorProto) -> str:
    if f.type in (FDP.TYPE_MESSAGE, FDP.TYPE_ENUM):
        return f.type_name.lstrip(".")
    return FDP.Type.Name(f.type)[len("TYPE_"):].lower()


def test_file_header():
    fdp = _file_proto()
    assert fdp.package == "caffe2"
    assert fdp.syntax in ("", "proto2")  # proto2 is the default and may be left implicit
    assert caffe2_pb2.__name__ == "c2lite.proto.caffe2_pb2"


@pytest.mark.parametrize("row", FIELDS, ids=lambda r: f"{r[0]}.{r[1]}")
def test_field_table(row):
    message, name, number, type_, label, default, packed = row
    declared = _declared_messages()[message]
    fields = {f.name: f for f in declared.field}
    assert name in fields, f"{message}.{name} missing"
    f = fields[name]
    assert f.number == number
    assert _type_of(f) == type_
    assert FDP.Label.Name(f.label) == "LABEL_" + label.upper()
    if default is None:
        assert not f.HasField("default_value")
    else:
        assert f.default_value == default
    assert (f.options.HasField("packed") and f.options.packed) == packed
    # And the runtime descriptor agrees (what the decoder actually uses).
    runtime = caffe2_pb2.DESCRIPTOR.message_types_by_name[message.split(".")[0]]
    for part in message.split(".")[1:]:
        runtime = runtime.nested_types_by_name[part]
    rf = runtime.fields_by_name[name]
    assert rf.number == number
    assert rf.is_repeated == (label == REP)
    assert rf.is_required == (label == REQ)
    assert rf.is_packed == packed


def test_no_fields_beyond_the_table():
    declared = _declared_messages()
    expected: dict[str, set[str]] = {}
    for message, name, *_ in FIELDS:
        expected.setdefault(message, set()).add(name)
    for message, names in expected.items():
        assert {f.name for f in declared[message].field} == names, message


def test_required_messages_present():
    names = set(_declared_messages())
    for required in ("TensorProto", "TensorProto.Segment", "TensorProtos", "TensorShape",
                     "TensorShapes", "QTensorProto", "Argument", "DeviceOption", "OperatorDef",
                     "NetDef", "PartitionInfo", "BackendOptions", "MapFieldEntry",
                     "ExecutionStep", "PlanDef", "BlobProto", "DBReaderProto"):
        assert required in names


def test_tensor_proto_reserved_numbers():
    tensor = _declared_messages()["TensorProto"]
    reserved = {n for r in tensor.reserved_range for n in range(r.start, r.end)}
    assert reserved == {12, 14}


@pytest.mark.parametrize("enum_name", sorted(ENUMS))
def test_enums(enum_name):
    pool = caffe2_pb2.DESCRIPTOR.pool
    enum = pool.FindEnumTypeByName(enum_name)
    assert {v.name: v.number for v in enum.values} == ENUMS[enum_name]


def test_legacy_device_aliases():
    for name, number in ENUMS["caffe2.DeviceTypeProto"].items():
        alias = name[len("PROTO_"):]
        assert getattr(caffe2_pb2, alias) == number == getattr(caffe2_pb2, name)
    assert caffe2_pb2.CPU == 0 and caffe2_pb2.CUDA == 1 and caffe2_pb2.HIP == 6
    assert caffe2_pb2.COMPILE_TIME_MAX_DEVICE_TYPES == 11


def test_device_type_is_plain_int32():
    # device_type is an int32, so values outside the enum (e.g. a newer device) survive.
    opt = caffe2_pb2.DeviceOption(device_type=12345, device_id=3)
    back = caffe2_pb2.DeviceOption.FromString(opt.SerializeToString())
    assert back.device_type == 12345 and back.device_id == 3
    assert caffe2_pb2.DeviceOption().device_type == caffe2_pb2.CPU


# ----------------------------------------------------------------------------------------
# Wire compatibility against an independently declared 2018-style schema
# ----------------------------------------------------------------------------------------

def _legacy_classes(packed_arg_ints: bool = False) -> dict[str, type]:
    """A 2018-era schema (cuda_gpu_id, no late fields) in its own package and pool."""
    fdp = descriptor_pb2.FileDescriptorProto(name="legacy2018/caffe2_old.proto",
                                             package="c2old", syntax="proto2")

    def message(name: str, *fields) -> None:
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, label, *rest in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if rest and rest[0]:
                f.type_name = rest[0]
            if len(rest) > 1 and rest[1]:
                f.options.packed = True

    o, r = FDP.LABEL_OPTIONAL, FDP.LABEL_REPEATED
    T = FDP
    message("DeviceOption",
            ("device_type", 1, T.TYPE_INT32, o), ("cuda_gpu_id", 2, T.TYPE_INT32, o),
            ("random_seed", 3, T.TYPE_UINT32, o))
    message("Argument",
            ("name", 1, T.TYPE_STRING, o), ("f", 2, T.TYPE_FLOAT, o),
            ("i", 3, T.TYPE_INT64, o), ("s", 4, T.TYPE_BYTES, o),
            ("floats", 5, T.TYPE_FLOAT, r), ("ints", 6, T.TYPE_INT64, r, None, packed_arg_ints),
            ("strings", 7, T.TYPE_BYTES, r), ("n", 8, T.TYPE_MESSAGE, o, ".c2old.NetDef"),
            ("nets", 9, T.TYPE_MESSAGE, r, ".c2old.NetDef"))
    message("OperatorDef",
            ("input", 1, T.TYPE_STRING, r), ("output", 2, T.TYPE_STRING, r),
            ("name", 3, T.TYPE_STRING, o), ("type", 4, T.TYPE_STRING, o),
            ("arg", 5, T.TYPE_MESSAGE, r, ".c2old.Argument"),
            ("device_option", 6, T.TYPE_MESSAGE, o, ".c2old.DeviceOption"),
            ("engine", 7, T.TYPE_STRING, o), ("control_input", 8, T.TYPE_STRING, r),
            ("is_gradient_op", 9, T.TYPE_BOOL, o))
    message("NetDef",
            ("name", 1, T.TYPE_STRING, o), ("op", 2, T.TYPE_MESSAGE, r, ".c2old.OperatorDef"),
            ("type", 3, T.TYPE_STRING, o), ("num_workers", 4, T.TYPE_INT32, o),
            ("device_option", 5, T.TYPE_MESSAGE, o, ".c2old.DeviceOption"),
            ("arg", 6, T.TYPE_MESSAGE, r, ".c2old.Argument"),
            ("external_input", 7, T.TYPE_STRING, r), ("external_output", 8, T.TYPE_STRING, r))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"c2old.{name}"))
            for name in ("DeviceOption", "Argument", "OperatorDef", "NetDef")}


def _fill(net, device_field: str) -> None:
    net.name = "compat"
    net.type = "dag"
    net.num_workers = 4
    net.external_input.extend(["X", "W"])
    net.external_output.append("Y")
    setattr(net.device_option, device_field, 2)
    net.device_option.device_type = 1
    net.device_option.random_seed = 7
    op = net.op.add(type="FC", name="fc", input=["X", "W"], output=["Y"], engine="CUDNN",
                    control_input=["ctl"], is_gradient_op=True)
    setattr(op.device_option, device_field, 3)
    op.arg.add(name="axis", i=-1)
    op.arg.add(name="alpha", f=0.5)
    op.arg.add(name="order", s=b"NCHW")
    op.arg.add(name="kernels", ints=[3, -3, 2 ** 40])
    op.arg.add(name="scales", floats=[0.25, -1.5])
    op.arg.add(name="names", strings=[b"a", b"\xff"])
    sub = op.arg.add(name="then_net").n
    sub.name = "inner"
    sub.op.add(type="Relu", input=["Y"], output=["Y"])
    op.arg.add(name="branches").nets.add(name="b0")


def _compare(old, new) -> None:
    """Field by field, across the two schemas."""
    assert (old.name, old.type, old.num_workers) == (new.name, new.type, new.num_workers)
    assert list(old.external_input) == list(new.external_input)
    assert list(old.external_output) == list(new.external_output)
    assert old.device_option.cuda_gpu_id == new.device_option.device_id == 2
    assert old.device_option.device_type == new.device_option.device_type == 1
    assert old.device_option.random_seed == new.device_option.random_seed == 7
    assert len(old.op) == len(new.op) == 1
    o, n = old.op[0], new.op[0]
    for f in ("type", "name", "engine", "is_gradient_op"):
        assert getattr(o, f) == getattr(n, f), f
    for f in ("input", "output", "control_input"):
        assert list(getattr(o, f)) == list(getattr(n, f)), f
    assert o.device_option.cuda_gpu_id == n.device_option.device_id == 3
    assert len(o.arg) == len(n.arg) == 8
    for a, b in zip(o.arg, n.arg):
        assert a.name == b.name
        assert (a.i, a.f, a.s) == (b.i, b.f, b.s)
        assert (list(a.ints), list(a.floats), list(a.strings)) == \
            (list(b.ints), list(b.floats), list(b.strings))
        assert a.HasField("n") == b.HasField("n")
        assert [x.name for x in a.nets] == [x.name for x in b.nets]
    assert o.arg[6].n.name == n.arg[6].n.name == "inner"
    assert o.arg[6].n.op[0].type == n.arg[6].n.op[0].type == "Relu"


@pytest.mark.parametrize("packed_ints", [False, True])
def test_wire_compat_old_schema_to_ours(packed_ints):
    Old = _legacy_classes(packed_ints)
    old = Old["NetDef"]()
    _fill(old, "cuda_gpu_id")
    data = old.SerializeToString()
    ours = caffe2_pb2.NetDef.FromString(data)
    _compare(old, ours)
    from c2lite.serialization import count_unknown_fields
    assert count_unknown_fields(ours) == 0
    if not packed_ints:  # both schemas write unpacked Argument.ints: same bytes
        assert ours.SerializeToString() == data


def test_wire_compat_ours_to_old_schema():
    Old = _legacy_classes()
    ours = caffe2_pb2.NetDef()
    _fill(ours, "device_id")
    # late-only fields must travel through the old reader as unknown fields, intact
    ours.op[0].domain = "caffe2"
    ours.op[0].op_version = 3
    ours.op[0].debug_info = "trace"
    ours.device_option.extra_info.append("k=v")
    ours.partition_info.add(name="p0", device_id=[0, 1])
    data = ours.SerializeToString()
    old = Old["NetDef"].FromString(data)
    _compare(old, ours)
    again = caffe2_pb2.NetDef.FromString(old.SerializeToString())
    assert again == ours


def test_packed_tensor_fields_accept_unpacked():
    # float_data (3) written unpacked: tag (3 << 3 | 5) followed by 4 little-endian bytes each
    import struct
    data = b"\x08\x02" + b"".join(b"\x1d" + struct.pack("<f", v) for v in (1.5, -2.0))
    t = caffe2_pb2.TensorProto.FromString(data)
    assert list(t.dims) == [2] and list(t.float_data) == [1.5, -2.0]
    assert t.SerializeToString() == b"\x08\x02\x1a\x08" + struct.pack("<ff", 1.5, -2.0)


# ----------------------------------------------------------------------------------------
# Generated code: up to date, and the dependency pin matches it
# ----------------------------------------------------------------------------------------

def test_generated_files_are_not_stale(tmp_path):
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpc_tools is not installed (pip install grpcio-tools)")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--out",
                    str(tmp_path)], check=True, capture_output=True)
    version = re.compile(rb"^# Protobuf Python Version: .*$", re.M)
    for name in ("caffe2_pb2.py", "caffe2_pb2.pyi"):
        fresh = (tmp_path / name).read_bytes()
        committed = (ROOT / "proto" / name).read_bytes()
        hint = ""
        if version.search(fresh) and version.search(committed):
            was, now = version.search(committed).group(), version.search(fresh).group()
            if was != now:
                hint = f" (committed: {was!r}; this grpcio-tools gives {now!r})"
        assert fresh == committed, f"proto/{name} is stale: run scripts/gen_proto.py{hint}"


def test_pyi_describes_the_messages():
    stub = (ROOT / "proto" / "caffe2_pb2.pyi").read_text()
    for name in ("NetDef", "OperatorDef", "TensorProto", "PlanDef", "BlobProto", "PartitionInfo"):
        assert re.search(rf"^class {name}\(_message\.Message\)", stub, re.M), name


def test_protobuf_pin_matches_gencode():
    gencode = (ROOT / "proto" / "caffe2_pb2.py").read_text()
    m = re.search(r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,"
                  r"\s*(\d+),\s*(\d+),\s*(\d+),", gencode)
    assert m, "generated module has no runtime version check"
    major, minor, patch = map(int, m.groups())
    pyproject = (ROOT / "pyproject.toml").read_text()
    pin = re.search(r'"protobuf>=([\d.]+),<(\d+)"', pyproject)
    assert pin, "pyproject.toml has no protobuf>=X,<Y pin"
    lower = tuple(int(x) for x in pin.group(1).split("."))
    assert lower == (major, minor, patch), "protobuf lower bound must equal the gencode version"
    assert int(pin.group(2)) > major
    import google.protobuf
    runtime = tuple(int(x) for x in google.protobuf.__version__.split(".")[:3])
    assert lower <= runtime < (int(pin.group(2)),)
