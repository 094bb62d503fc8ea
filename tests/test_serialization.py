"""c2lite.serialization: legacy files, format detection, limits, tensors and blobs."""
from __future__ import annotations

import logging
import re
import shutil
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from c2lite import serialization as S
from c2lite.errors import ProtoError
from c2lite.proto import caffe2_pb2

DATA = Path(__file__).resolve().parent / "data" / "legacy-nets"
FAST = settings(max_examples=30, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
DT = caffe2_pb2.TensorProto


def _readme_table() -> list[tuple[str, int, int]]:
    """(relative path, bytes, ops) for every row of the fixtures README."""
    rows = []
    for line in (DATA / "README.md").read_text().splitlines():
        m = re.match(r"\|\s*((?:binary|text)/[^|]+?)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|", line)
        if m:
            rows.append((m.group(1), int(m.group(2)), int(m.group(3))))
    return rows


TABLE = _readme_table()
BINARY = [row for row in TABLE if row[0].startswith("binary/")]
TEXT = [row for row in TABLE if row[0].startswith("text/")]
SMALL_BINARY = [row for row in BINARY if row[1] < 100_000]
OP_TESTS = sorted(p.relative_to(DATA).as_posix()
                  for p in (DATA / "serialized_op_tests").glob("*/*.pb"))

# Which upgrades each legacy text file must report (substrings of the report lines).
EXPECTED_UPGRADES = {
    "text/c2-ssd-test_net_2017-05.pbtxt": ["cuda_gpu_id -> device_id (100 places)"],
    "text/c2-notebook_alexnet2_init_2016-03.pbtxt": [
        "device_type enum name CUDA -> 1 (1 place)", "cuda_gpu_id -> device_id (1 place)"],
    "text/c2-notebook_alexnet2_train_2016-03.pbtxt": [
        "net_type -> type (1 place)", "device_type enum name CUDA -> 1",
        "cuda_gpu_id -> device_id"],
    "text/c2-notebook_mnist_lenet_train_2015-06.pbtxt": [
        "operators -> op (40 places)", "inputs -> input", "outputs -> output",
        "args -> arg"],
}


def test_fixture_table_is_complete():
    assert len(BINARY) == 8 and len(TEXT) == 15
    on_disk = {p.relative_to(DATA).as_posix() for d in ("binary", "text")
               for p in (DATA / d).iterdir()}
    assert on_disk == {row[0] for row in TABLE}
    assert len(OP_TESTS) > 200


# ----------------------------------------------------------------------------------------
# Legacy files
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("rel,size,ops", BINARY, ids=[r[0] for r in BINARY])
def test_binary_legacy_nets(rel, size, ops, tmp_path):
    path = DATA / rel
    raw = path.read_bytes()
    assert len(raw) == size
    loaded = S.read_net(path)
    assert loaded.format == "binary" and loaded.upgrades == [] and loaded.path == str(path)
    assert len(loaded.proto.op) == ops
    assert S.count_unknown_fields(loaded.proto) == 0
    assert loaded.proto.SerializeToString() == raw
    out = tmp_path / "copy.pb"
    S.save_net(loaded.proto, out)
    assert out.read_bytes() == raw
    # bytes input: detected as binary, same message
    assert S.read_net(raw).proto == loaded.proto
    assert S.read_net(raw).format == "binary"


@pytest.mark.parametrize("rel,size,ops", TEXT, ids=[r[0] for r in TEXT])
def test_text_legacy_nets(rel, size, ops, tmp_path):
    path = DATA / rel
    assert path.stat().st_size == size
    loaded = S.read_net(path)
    assert loaded.format == "text"
    assert len(loaded.proto.op) == ops
    expected = EXPECTED_UPGRADES.get(rel, [])
    if expected:
        joined = "\n".join(loaded.upgrades)
        for piece in expected:
            assert piece in joined, (piece, loaded.upgrades)
    else:
        assert loaded.upgrades == []
        # parses as written: our loader must not have changed anything
        assert loaded.proto == text_format.Parse(path.read_text(), caffe2_pb2.NetDef())
    # semantic round trip through text and through binary
    for name in ("again.pbtxt", "again.prototxt", "again.txt", "again.pb"):
        S.save_net(loaded.proto, tmp_path / name)
        back = S.read_net(tmp_path / name)
        assert back.proto == loaded.proto and back.upgrades == []
        assert back.format == ("binary" if name.endswith(".pb") else "text")


def test_legacy_upgrade_values():
    ssd = S.load_net(DATA / "text/c2-ssd-test_net_2017-05.pbtxt")
    on_gpu = [op for op in ssd.op if op.device_option.device_type == caffe2_pb2.CUDA]
    assert len(on_gpu) == 100 and all(op.device_option.device_id == 3 for op in on_gpu)
    alex = S.load_net(DATA / "text/c2-notebook_alexnet2_train_2016-03.pbtxt")
    assert alex.type == "dag" and alex.device_option.device_type == caffe2_pb2.CUDA
    lenet = S.load_net(DATA / "text/c2-notebook_mnist_lenet_train_2015-06.pbtxt")
    assert lenet.name == "train"
    assert list(lenet.op[0].output) == ["data", "label"]
    assert lenet.op[0].arg[0].name == "db_type" and lenet.op[0].arg[0].s == b"leveldb"
    assert list(lenet.op[1].input) == ["data", "filter1", "bias1"]


def test_load_net_logs_upgrades(caplog):
    with caplog.at_level(logging.INFO, logger="c2lite.serialization"):
        S.load_net(DATA / "text/c2-ssd-test_net_2017-05.pbtxt")
    messages = [r.getMessage() for r in caplog.records if r.name == "c2lite.serialization"]
    assert any("cuda_gpu_id -> device_id" in m and "c2-ssd-test" in m for m in messages)
    assert all(r.levelno == logging.INFO for r in caplog.records)


def test_nested_nets_in_mask_rcnn():
    net = S.load_net(DATA / "binary/zoo_mask_rcnn_2go_fp32_model_2018-12.pb")
    branches = [a.n for op in net.op if op.type == "If" for a in op.arg if a.HasField("n")]
    assert [b.name for b in branches] == ["emptynet", "mask_net"]
    assert len(branches[0].op) == 0 and len(branches[1].op) == 27


@pytest.mark.parametrize("rel", OP_TESTS)
def test_serialized_op_tests(rel):
    raw = (DATA / rel).read_bytes()
    op = S.parse_proto(raw, caffe2_pb2.OperatorDef, path=rel)
    assert op.type
    assert S.count_unknown_fields(op) == 0
    assert op.SerializeToString() == raw
    assert op.is_gradient_op == Path(rel).name.startswith("grad_")


def test_pair_wise_loss_gradient_maker_fixture():
    folder = DATA / "serialized_op_tests/rank_loss_operator_test.test_pair_wise_loss_batch"
    fwd = S.parse_proto((folder / "op.pb").read_bytes(), caffe2_pb2.OperatorDef)
    grad = S.parse_proto((folder / "grad_0.pb").read_bytes(), caffe2_pb2.OperatorDef)
    assert (fwd.type, list(fwd.input), list(fwd.output)) == \
        ("PairWiseLoss", ["X", "label", "lengths"], ["out"])
    assert (grad.type, list(grad.input), list(grad.output)) == \
        ("PairWiseLossGradient", ["X", "label", "out_grad", "lengths"], ["X_grad"])


# ----------------------------------------------------------------------------------------
# The legacy rewriter
# ----------------------------------------------------------------------------------------

def test_rewriter_leaves_strings_and_comments_alone():
    text = '''
name: "net_type: x cuda_gpu_id: 1"   # cuda_gpu_id: 2 in a comment
net_type: "dag"
operators {
  inputs: "operators {"
  outputs: 'inputs: "y"'
  type: "CUDA"
  args { name: "args" s: "device_type: CUDA" }
  device_option { device_type: CUDA cuda_gpu_id: 1 }
}
'''
    net, upgrades = S.parse_text_proto(text, caffe2_pb2.NetDef)
    assert net.name == "net_type: x cuda_gpu_id: 1"
    assert net.type == "dag"
    op = net.op[0]
    assert list(op.input) == ["operators {"] and list(op.output) == ['inputs: "y"']
    assert op.type == "CUDA"
    assert (op.arg[0].name, op.arg[0].s) == ("args", b"device_type: CUDA")
    assert (op.device_option.device_type, op.device_option.device_id) == (1, 1)
    assert len(upgrades) == 7


def test_rewriter_is_context_aware():
    # "inputs" is a legacy name only inside an OperatorDef; at net level it stays an error.
    with pytest.raises(ProtoError, match="inputs"):
        S.parse_text_proto('inputs: "x"', caffe2_pb2.NetDef)
    # a device_type enum name elsewhere (a string field) is not rewritten
    net, _ = S.parse_text_proto('name: "CUDA" op { device_option { device_type: HIP } }',
                                caffe2_pb2.NetDef)
    assert net.name == "CUDA" and net.op[0].device_option.device_type == caffe2_pb2.HIP


def test_text_that_parses_is_untouched():
    text = 'name: "x"\nop { type: "Relu" input: "cuda_gpu_id" output: "net_type" }\n'
    net, upgrades = S.parse_text_proto(text, caffe2_pb2.NetDef)
    assert upgrades == [] and net.op[0].input[0] == "cuda_gpu_id"


@pytest.mark.parametrize("name", ["CPU", "CUDA", "MKLDNN", "OPENGL", "OPENCL", "IDEEP", "HIP",
                                  "FPGA", "MSNPU", "XLA", "MLC", "PROTO_CUDA", "PROTO_CPU"])
def test_device_type_enum_names(name):
    net, upgrades = S.parse_text_proto(f"device_option {{ device_type: {name} }}",
                                       caffe2_pb2.NetDef)
    assert net.device_option.device_type == getattr(caffe2_pb2, name)
    assert len(upgrades) == 1 and name in upgrades[0]


def test_unknown_device_type_name_is_an_error():
    with pytest.raises(ProtoError, match="TPU9000"):
        S.parse_text_proto("device_option { device_type: TPU9000 }", caffe2_pb2.NetDef)


def test_plan_round_trip_and_legacy(tmp_path):
    plan = caffe2_pb2.PlanDef(name="p")
    net = plan.network.add(name="train")
    net.op.add(type="Relu", input=["x"], output=["y"])
    step = plan.execution_step.add(name="s", num_iter=10)
    step.substep.add(name="inner", network=["train"])
    for name in ("plan.pb", "plan.pbtxt"):
        S.save_plan(plan, tmp_path / name)
        assert S.load_plan(tmp_path / name) == plan
    legacy = 'name: "p" network { name: "n" operators { type: "Relu" inputs: "x" } }'
    loaded = S.read_plan(legacy.encode())
    assert loaded.format == "text" and loaded.proto.network[0].op[0].input == ["x"]
    assert any("operators -> op" in u for u in loaded.upgrades)


# ----------------------------------------------------------------------------------------
# Format detection, saving
# ----------------------------------------------------------------------------------------

def test_detection_without_extension(tmp_path):
    binary = DATA / "binary/hmc_onnx-export_predict_net.pb"
    text = DATA / "text/zoo_bvlc_alexnet_predict_net.pbtxt"
    shutil.copy(binary, tmp_path / "model")
    shutil.copy(text, tmp_path / "model.dat")
    a, b = S.read_net(tmp_path / "model"), S.read_net(str(tmp_path / "model.dat"))
    assert a.format == "binary" and a.proto == S.load_net(binary)
    assert b.format == "text" and b.proto == S.load_net(text)
    assert S.read_net(text.read_bytes()).format == "text"
    assert S.read_net(bytearray(binary.read_bytes())).format == "binary"


def test_bytes_vs_path():
    path = DATA / "text/zoo_vgg19_predict_net.pbtxt"
    by_path = S.read_net(path)
    by_bytes = S.read_net(path.read_bytes())
    assert by_path.proto == by_bytes.proto
    assert by_path.path == str(path) and by_bytes.path is None
    with pytest.raises(TypeError):
        S.read_net(12345)  # type: ignore[arg-type]


def test_printable_binary_is_detected():
    net = caffe2_pb2.NetDef(external_input=["a" * 37])
    data = net.SerializeToString()
    assert data.decode("ascii").isprintable()  # looks like text, is not
    loaded = S.read_net(data)
    assert loaded.format == "binary" and loaded.proto == net


def test_empty_input():
    assert S.read_net(b"").proto == caffe2_pb2.NetDef()


def test_net_from_bytes_or_text():
    net = S.load_net(DATA / "binary/hmc_onnx-export_predict_net.pb")
    assert S.net_from_bytes_or_text(net.SerializeToString()) == net
    assert S.net_from_bytes_or_text(text_format.MessageToString(net)) == net
    assert S.net_from_bytes_or_text(net) is net
    legacy = S.net_from_bytes_or_text('operators { type: "Relu" }')
    assert legacy.op[0].type == "Relu"


def test_save_net_accepts_proto_holders_and_format_override(tmp_path):
    class Holder:
        def __init__(self, proto):
            self._proto = proto

        def Proto(self):
            return self._proto

    net = caffe2_pb2.NetDef(name="h", external_input=["x"])
    S.save_net(Holder(net), tmp_path / "a.pb")
    assert (tmp_path / "a.pb").read_bytes() == net.SerializeToString()
    S.save_net(net, tmp_path / "b.pb", format="text")
    assert (tmp_path / "b.pb").read_text().startswith('name: "h"')
    assert S.read_net((tmp_path / "b.pb").read_bytes()).proto == net
    S.save_net(net, tmp_path / "c.pbtxt", format="binary")
    assert (tmp_path / "c.pbtxt").read_bytes() == net.SerializeToString()
    with pytest.raises(TypeError):
        S.save_net(caffe2_pb2.OperatorDef(), tmp_path / "d.pb")
    with pytest.raises(ValueError):
        S.save_net(net, tmp_path / "e.pb", format="json")  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pb", "b.pb", "c.pbtxt"]


def test_save_net_refuses_uninitialized(tmp_path):
    net = caffe2_pb2.NetDef()
    net.partition_info.add()  # required name missing
    for name in ("x.pb", "x.pbtxt"):
        with pytest.raises(ProtoError, match="partition_info"):
            S.save_net(net, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------
# Malformed input: always ProtoError
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("rel,size,ops", BINARY, ids=[r[0] for r in BINARY])
def test_truncated_binaries(rel, size, ops):
    raw = (DATA / rel).read_bytes()
    rng = np.random.default_rng(size)
    cuts = sorted(set(rng.integers(1, size, 60).tolist()) | {1, 2, size - 1})
    errors = 0
    for cut in cuts:
        try:
            net = S.parse_proto(raw[:cut], caffe2_pb2.NetDef, path=rel)
        except ProtoError as exc:
            errors += 1
            assert exc.path == rel and rel in str(exc) and "NetDef" in str(exc)
        else:
            # only a cut exactly between two top-level fields decodes: a strict prefix
            assert net.SerializeToString() == raw[:cut]
            assert len(net.op) <= ops
    assert errors >= len(cuts) // 2


def test_truncated_file_names_the_file(tmp_path):
    raw = (DATA / "binary/c2-test-assets_squeeze_predict_net.pb").read_bytes()
    path = tmp_path / "cut.pb"
    path.write_bytes(raw[:1000])
    with pytest.raises(ProtoError) as info:
        S.read_net(path)
    assert str(path) in str(info.value) and info.value.path == str(path)


@FAST
@given(st.sampled_from(SMALL_BINARY), st.data())
def test_bit_flips(row, data):
    raw = bytearray((DATA / row[0]).read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] ^= 1 << data.draw(st.integers(0, 7))
    for decode in (lambda b: S.parse_proto(b, caffe2_pb2.NetDef),
                   lambda b: S.read_net(b).proto):
        try:
            net = decode(bytes(raw))
        except ProtoError:
            continue
        assert isinstance(net, caffe2_pb2.NetDef)


@FAST
@given(st.binary(max_size=300))
def test_random_bytes(blob):
    for message_type in (caffe2_pb2.NetDef, caffe2_pb2.TensorProto, caffe2_pb2.BlobProto):
        try:
            msg = S.parse_proto(blob, message_type)
        except ProtoError:
            continue
        if message_type is caffe2_pb2.TensorProto:
            try:
                S.tensor_to_numpy(msg)
            except ProtoError:
                pass
    try:
        S.read_net(blob)
    except ProtoError:
        pass


@FAST
@given(st.text(max_size=200))
def test_random_text(text):
    try:
        net = S.net_from_bytes_or_text(text)
    except ProtoError:
        return
    assert isinstance(net, caffe2_pb2.NetDef)


@pytest.mark.parametrize("garbage", [
    "hello world", "hi", "xx", "op {", "op { type: }", "name: 'unterminated", "}}}}",
    "op { foo: 1 }",
    "name: \"x\" name: \"y\"", "\x00\x01garbage", "device_option { device_type: 1.5 }",
    "op { arg { n { op { arg { n { " + "x" * 10,
])
def test_garbage_text_raises(garbage, tmp_path):
    with pytest.raises(ProtoError):
        S.net_from_bytes_or_text(garbage)
    with pytest.raises(ProtoError):
        S.read_net(garbage.encode())
    path = tmp_path / "g.pbtxt"
    path.write_text(garbage)
    with pytest.raises(ProtoError) as info:
        S.read_net(path)
    assert str(path) in str(info.value)


def test_text_in_a_pb_file_gets_a_hint(tmp_path):
    path = tmp_path / "net.pb"
    path.write_text('name: "x" op { type: "Relu" }')
    with pytest.raises(ProtoError, match="looks like text format") as info:
        S.read_net(path)
    assert info.value.path == str(path)


def test_invalid_utf8_text_file(tmp_path):
    path = tmp_path / "bad.pbtxt"
    path.write_bytes(b'name: "\xff\xfe"')
    with pytest.raises(ProtoError, match="UTF-8"):
        S.read_net(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ProtoError) as info:
        S.read_net(tmp_path / "nope.pb")
    assert "nope.pb" in str(info.value)
    with pytest.raises(ProtoError):
        S.read_net(tmp_path)


def test_missing_required_fields():
    data = b"\x4a\x02\x10\x01"  # NetDef.partition_info { device_id: 1 } without name
    with pytest.raises(ProtoError, match="required"):
        S.parse_proto(data, caffe2_pb2.NetDef)
    with pytest.raises(ProtoError, match="required"):
        S.parse_text_proto("partition_info { device_id: 1 }", caffe2_pb2.NetDef)


def test_size_limit_checked_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "net.pb"
    shutil.copy(DATA / "binary/hmc_onnx-export_predict_net.pb", path)
    monkeypatch.setattr(S, "MAX_PROTO_BYTES", 100)

    def no_open(*args, **kwargs):
        raise AssertionError("file was opened although it is over the limit")

    monkeypatch.setattr(S, "open", no_open, raising=False)
    with pytest.raises(ProtoError, match="MAX_PROTO_BYTES") as info:
        S.read_net(path)
    assert info.value.path == str(path)
    with pytest.raises(ProtoError, match="MAX_PROTO_BYTES"):
        S.parse_proto(path.read_bytes(), caffe2_pb2.NetDef)
    with pytest.raises(ProtoError, match="MAX_PROTO_BYTES"):
        S.parse_text_proto("name: '" + "x" * 200 + "'", caffe2_pb2.NetDef)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _nested_net_bytes(levels: int) -> bytes:
    """NetDef { op { arg { n { ... } } } } nested ``levels`` NetDefs deep, built on the wire."""
    def field(number: int, payload: bytes) -> bytes:
        return _varint(number << 3 | 2) + _varint(len(payload)) + payload

    inner = b""
    for _ in range(levels - 1):
        inner = field(2, field(5, field(8, inner)))  # NetDef.op -> OperatorDef.arg -> Argument.n
    return inner


def test_net_nesting_limit(monkeypatch):
    data = _nested_net_bytes(6)
    net = S.parse_proto(data, caffe2_pb2.NetDef)
    text = text_format.MessageToString(net)
    monkeypatch.setattr(S, "MAX_NET_NESTING", 5)
    with pytest.raises(ProtoError, match="MAX_NET_NESTING"):
        S.parse_proto(data, caffe2_pb2.NetDef)
    with pytest.raises(ProtoError, match="MAX_NET_NESTING"):
        S.parse_text_proto(text, caffe2_pb2.NetDef)
    monkeypatch.setattr(S, "MAX_NET_NESTING", 6)
    assert S.parse_proto(data, caffe2_pb2.NetDef) == net


def test_nets_list_counts_too(monkeypatch):
    net = caffe2_pb2.NetDef()
    inner = net.op.add().arg.add().nets.add()
    inner.op.add().arg.add().nets.add(name="deepest")
    monkeypatch.setattr(S, "MAX_NET_NESTING", 2)
    with pytest.raises(ProtoError, match="nested 3 deep"):
        S.parse_proto(net.SerializeToString(), caffe2_pb2.NetDef)


def test_protobuf_recursion_limit_is_a_proto_error():
    with pytest.raises(ProtoError):
        S.parse_proto(_nested_net_bytes(300), caffe2_pb2.NetDef)
    deep_steps = b""
    for _ in range(5000):
        deep_steps = b"\x12" + _varint(len(deep_steps)) + deep_steps  # ExecutionStep.substep
    with pytest.raises(ProtoError):
        S.parse_proto(b"\x1a" + _varint(len(deep_steps)) + deep_steps, caffe2_pb2.PlanDef)
    with pytest.raises(ProtoError):
        S.parse_text_proto("op { arg { n { " * 400 + "} } }" * 400, caffe2_pb2.NetDef)


# ----------------------------------------------------------------------------------------
# Tensors
# ----------------------------------------------------------------------------------------

NUMERIC = [np.float32, np.float64, np.float16, np.int32, np.int64, np.int16, np.int8,
           np.uint8, np.uint16, np.bool_]
EXPECTED_TYPE = {np.float32: DT.FLOAT, np.float64: DT.DOUBLE, np.float16: DT.FLOAT16,
                 np.int32: DT.INT32, np.int64: DT.INT64, np.int16: DT.INT16, np.int8: DT.INT8,
                 np.uint8: DT.UINT8, np.uint16: DT.UINT16, np.bool_: DT.BOOL}
EXPECTED_FIELD = {DT.FLOAT: "float_data", DT.DOUBLE: "double_data", DT.INT64: "int64_data"}


def _same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    if a.dtype == np.float16:  # compare bit patterns, NaN payloads included
        np.testing.assert_array_equal(a.view(np.uint16), b.view(np.uint16))
    else:
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", NUMERIC, ids=lambda d: np.dtype(d).name)
@FAST
@given(data=st.data())
def test_numeric_round_trip(dtype, data):
    arr = data.draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0,
                                                       max_side=5)))
    for raw in (False, True):
        t = S.numpy_to_tensor(arr, "x", use_raw_data=raw)
        assert t.data_type == EXPECTED_TYPE[dtype] and t.name == "x"
        assert list(t.dims) == list(arr.shape)
        if raw:
            assert len(t.raw_data) == arr.size * arr.dtype.itemsize
        else:
            assert not t.HasField("raw_data")
            field = EXPECTED_FIELD.get(t.data_type, "int32_data")
            assert len(getattr(t, field)) == arr.size
        back = S.tensor_to_numpy(caffe2_pb2.TensorProto.FromString(t.SerializeToString()))
        _same(back, arr)
        assert back.flags.writeable


def test_float16_stores_bit_pattern():
    t = S.numpy_to_tensor(np.array([1.0, -2.0, np.inf], dtype=np.float16))
    assert t.data_type == DT.FLOAT16 and list(t.int32_data) == [0x3C00, 0xC000, 0x7C00]


def test_big_endian_and_strided_input():
    arr = np.arange(12, dtype=">i4").reshape(3, 4)[:, ::2]
    for raw in (False, True):
        t = S.numpy_to_tensor(arr, use_raw_data=raw)
        _same(S.tensor_to_numpy(t), arr.astype(np.int32))
    t = S.numpy_to_tensor(np.array([1.0, 2.0], dtype=">f8"), use_raw_data=True)
    assert t.raw_data == struct.pack("<dd", 1.0, 2.0)


def test_raw_data_is_little_endian():
    t = caffe2_pb2.TensorProto(dims=[2], data_type=DT.INT32,
                               raw_data=struct.pack("<ii", 1, -2))
    _same(S.tensor_to_numpy(t), np.array([1, -2], dtype=np.int32))


@FAST
@given(st.lists(st.binary(max_size=8), max_size=6))
def test_string_tensors(items):
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    t = S.numpy_to_tensor(arr, use_raw_data=True)  # strings always go to string_data
    assert t.data_type == DT.STRING and list(t.string_data) == items
    back = S.tensor_to_numpy(caffe2_pb2.TensorProto.FromString(t.SerializeToString()))
    assert back.dtype == object and back.shape == (len(items),) and list(back) == items


def test_str_arrays_become_utf8_strings():
    t = S.numpy_to_tensor(np.array([["a", "é"], ["", "xyz"]]))
    assert list(t.dims) == [2, 2] and list(t.string_data) == [b"a", "é".encode(), b"", b"xyz"]
    assert S.tensor_to_numpy(t)[0, 1] == "é".encode()


def test_byte_data_type():
    arr = np.array([[0, 255], [7, 8]], dtype=np.uint8)
    t = S.numpy_to_tensor(arr, data_type=DT.BYTE)
    assert t.byte_data == arr.tobytes() and len(t.int32_data) == 0
    _same(S.tensor_to_numpy(t), arr)


def test_empty_and_scalar_tensors():
    for arr in (np.zeros((0,), np.float32), np.zeros((3, 0, 2), np.int64),
                np.array(5.5, np.float64), np.array(True), np.empty(0, dtype=object)):
        for raw in (False, True):
            t = S.numpy_to_tensor(arr, use_raw_data=raw)
            back = S.tensor_to_numpy(caffe2_pb2.TensorProto.FromString(t.SerializeToString()))
            assert back.shape == arr.shape and back.dtype == arr.dtype
            np.testing.assert_array_equal(back, arr)
    assert list(S.numpy_to_tensor(np.float32(2)).dims) == []


def test_unpacked_encodings_decode():
    def unpacked(tag_field: int, wire: int, payloads: list[bytes]) -> bytes:
        return b"".join(_varint(tag_field << 3 | wire) + p for p in payloads)

    dims = b"\x08\x03"
    cases = [
        (DT.FLOAT, unpacked(3, 5, [struct.pack("<f", v) for v in (1.0, 2.5, -3.0)]),
         np.array([1.0, 2.5, -3.0], np.float32)),
        (DT.DOUBLE, unpacked(9, 1, [struct.pack("<d", v) for v in (1e300, 0.5, -1.0)]),
         np.array([1e300, 0.5, -1.0], np.float64)),
        (DT.INT32, unpacked(4, 0, [_varint(v & (2 ** 64 - 1)) for v in (1, -1, 300)]),
         np.array([1, -1, 300], np.int32)),
        (DT.INT64, unpacked(10, 0, [_varint(v & (2 ** 64 - 1)) for v in (2 ** 40, -5, 0)]),
         np.array([2 ** 40, -5, 0], np.int64)),
    ]
    for data_type, payload, expected in cases:
        data = dims + b"\x10" + _varint(data_type) + payload
        t = S.parse_proto(data, caffe2_pb2.TensorProto)
        _same(S.tensor_to_numpy(t), expected)
        packed = S.numpy_to_tensor(expected).SerializeToString()
        assert S.tensor_to_numpy(caffe2_pb2.TensorProto.FromString(packed)).tobytes() == \
            expected.tobytes()
        assert len(packed) < len(data)  # ours writes the packed form


def test_segments():
    full = np.arange(10, dtype=np.float32).reshape(2, 5)
    chunks = []
    for begin, end in ((0, 4), (4, 10)):
        t = S.numpy_to_tensor(full.ravel()[begin:end])
        del t.dims[:]
        t.dims.extend(full.shape)
        t.segment.begin, t.segment.end = begin, end
        chunks.append(t)
        _same(S.tensor_to_numpy(t), full.ravel()[begin:end])
    _same(S.assemble_tensor(reversed(chunks)), full)
    with pytest.raises(ProtoError, match="cover"):
        S.assemble_tensor(chunks[:1])
    with pytest.raises(ProtoError, match="overlap"):
        S.assemble_tensor(chunks + chunks[:1])
    huge = caffe2_pb2.TensorProto(dims=[10 ** 9], data_type=DT.FLOAT, float_data=[1.0, 2.0])
    huge.segment.begin, huge.segment.end = 0, 2
    _same(S.tensor_to_numpy(huge), np.array([1.0, 2.0], np.float32))
    assert _peak_allocation(lambda: S.assemble_tensor([huge])) < 1 << 20
    with pytest.raises(ProtoError, match="cover 2 of"):
        S.assemble_tensor([huge])
    whole = S.numpy_to_tensor(full)
    whole.segment.begin, whole.segment.end = 0, 10
    _same(S.tensor_to_numpy(whole), full)
    bad = S.numpy_to_tensor(full)
    bad.segment.begin, bad.segment.end = 5, 11
    with pytest.raises(ProtoError, match="segment"):
        S.tensor_to_numpy(bad)


def test_bfloat16_format():
    values = np.array([1.0, -2.5, 3.140625], dtype=np.float32)
    halves = (values.view(np.uint32) >> 16).astype("<u2")
    t = caffe2_pb2.TensorProto(dims=[3], data_type=DT.FLOAT, data_format=DT.FMT_BFLOAT16,
                               raw_data=halves.tobytes())
    _same(S.tensor_to_numpy(t), values)
    t.data_format = 7
    with pytest.raises(ProtoError, match="data_format"):
        S.tensor_to_numpy(t)


def _peak_allocation(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    except ProtoError:
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


@pytest.mark.parametrize("dims,fields", [
    ([10 ** 12], {"float_data": [1.0, 2.0]}),
    ([2 ** 31 + 1], {}),
    ([2 ** 40, 2 ** 40], {}),
    ([2 ** 62, 4, 0], {}),
    ([-1], {"float_data": [1.0]}),
    ([3, -2], {}),
    ([10 ** 6], {"raw_data": b"\x00" * 16}),
    ([2, 3], {"float_data": [1.0] * 5}),
    ([2, 3], {"float_data": [1.0] * 7}),
    ([], {}),
    ([4], {"raw_data": b"\x00" * 15}),
])
def test_claimed_shape_must_match_data(dims, fields):
    t = caffe2_pb2.TensorProto(dims=dims, data_type=DT.FLOAT, **fields)
    data = t.SerializeToString()
    assert len(data) < 100
    decoded = S.parse_proto(data, caffe2_pb2.TensorProto)
    with pytest.raises(ProtoError):
        S.tensor_to_numpy(decoded)
    assert _peak_allocation(lambda: S.tensor_to_numpy(decoded)) < 1 << 20


def test_negative_dims_rejected_even_when_the_product_fits():
    t = caffe2_pb2.TensorProto(dims=[-1, -1], data_type=DT.FLOAT, float_data=[1.0])
    with pytest.raises(ProtoError, match="negative"):
        S.tensor_to_numpy(t)


def test_element_limit(monkeypatch):
    t = S.numpy_to_tensor(np.zeros(12, np.float32), "big")
    monkeypatch.setattr(S, "MAX_TENSOR_ELEMENTS", 10)
    with pytest.raises(ProtoError, match="MAX_TENSOR_ELEMENTS") as info:
        S.tensor_to_numpy(t)
    assert "'big'" in str(info.value)
    monkeypatch.setattr(S, "MAX_TENSOR_ELEMENTS", 12)
    assert S.tensor_to_numpy(t).shape == (12,)


def test_count_mismatch_for_every_storage():
    for data_type, field, value in ((DT.INT32, "int32_data", [1]), (DT.INT64, "int64_data", [1]),
                                    (DT.DOUBLE, "double_data", [1.0]),
                                    (DT.STRING, "string_data", [b"a"]),
                                    (DT.BYTE, "byte_data", b"a"), (DT.FLOAT16, "int32_data", [1])):
        t = caffe2_pb2.TensorProto(dims=[2], data_type=data_type, **{field: value})
        with pytest.raises(ProtoError, match=r"needs 2"):
            S.tensor_to_numpy(t)


@pytest.mark.parametrize("data_type", [DT.UNDEFINED, DT.ZERO_COLLISION_HASH,
                                       DT.REBATCHING_BUFFER, 11, 99])
def test_unsupported_data_types(data_type):
    t = caffe2_pb2.TensorProto.FromString(b"\x08\x01\x10" + _varint(data_type))
    with pytest.raises(ProtoError, match="data_type"):
        S.tensor_to_numpy(t)


def test_unsupported_numpy_dtypes():
    for arr in (np.zeros(2, np.complex64), np.zeros(2, np.uint64), np.array([1, None], object)):
        with pytest.raises(ProtoError):
            S.numpy_to_tensor(arr)
    with pytest.raises(ProtoError):
        S.numpy_to_tensor(np.zeros(2, np.float32), data_type=DT.ZERO_COLLISION_HASH)


def test_init_net_given_tensor_fill_values():
    net = S.load_net(DATA / "binary/hmc_onnx-export_init_net.pb")
    fills = [op for op in net.op if op.type == "GivenTensorFill"]
    assert fills
    for op in fills:
        args = {a.name: a for a in op.arg}
        shape = list(args["shape"].ints)
        t = caffe2_pb2.TensorProto(dims=shape, data_type=DT.FLOAT,
                                   float_data=args["values"].floats)
        assert S.tensor_to_numpy(t).shape == tuple(shape)


# ----------------------------------------------------------------------------------------
# Blobs
# ----------------------------------------------------------------------------------------

def test_tensor_blob_round_trip():
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    blob = S.blob_to_proto("w", arr)
    assert (blob.name, blob.type, blob.tensor.name) == ("w", "Tensor", "w")
    name, value = S.deserialize_blob(S.serialize_blob("w", arr))
    assert name == "w"
    _same(value, arr)
    name, value = S.deserialize_blob(S.serialize_blob("i", 7))
    assert value.shape == () and value == 7


def test_string_blob_round_trip():
    for value, expected in (("héllo", "héllo".encode()), (b"\x00\xff", b"\x00\xff"),
                            (bytearray(b"ab"), b"ab")):
        blob = S.blob_to_proto("s", value)
        assert blob.type == "std::string" and blob.content == expected
        assert S.deserialize_blob(blob.SerializeToString()) == ("s", expected)


def test_blob_errors():
    with pytest.raises(ProtoError):
        S.deserialize_blob(b"\x0a\xff")
    with pytest.raises(ProtoError, match="DBReader"):
        S.proto_to_blob(caffe2_pb2.BlobProto(name="r", type="DBReader", content=b""))
