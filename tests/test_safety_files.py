"""Safety of untrusted files: every decoder either succeeds or raises the c2lite error family.

Property-based fuzzing over the legacy fixture nets (bit flips, truncation, splices, inserted
huge length prefixes, deep Argument.n nesting, random bytes), every TensorProto field, and
``.npz`` archives. Loading must never execute code, never crash the interpreter, never
allocate what a file merely claims, and must name the file and the problem when it refuses.
The fuzzers are bounded by example count (derandomized by tests/conftest.py).
"""
from __future__ import annotations

import io
import os
import pickle
import tempfile
import threading
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import c2lite
from c2lite import serialization as S
from c2lite.errors import EnforceError, ProtoError
from c2lite.proto import caffe2_pb2

DATA = Path(__file__).resolve().parent / "data" / "legacy-nets"
DT = caffe2_pb2.TensorProto
FUZZ = settings(max_examples=2000, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


# ----------------------------------------------------------------------------------------
# Seeds and wire-format helpers
# ----------------------------------------------------------------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _nested_netdef(depth: int) -> bytes:
    """A NetDef holding ``depth`` NetDefs on one path: NetDef.op -> OperatorDef.arg ->
    Argument.n -> NetDef ..., built on the wire (no Python recursion, any depth)."""
    inner = _field(1, b"leaf")  # NetDef.name
    for level in range(depth - 1):
        arg = _field(1, b"then_net") + _field(8, inner)          # Argument{name, n}
        op = _field(2, b"If") + _field(5, arg)                  # OperatorDef{type, arg}
        inner = _field(1, b"n%d" % level) + _field(2, op)       # NetDef{name, op}
    return inner


def _nested_text(depth: int) -> str:
    return "op { arg { n { " * (depth - 1) + 'name: "leaf"' + " } } }" * (depth - 1)


def _tensor_seeds() -> list[bytes]:
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, -2, 3], np.int64),
              np.array([0.5, np.nan], np.float64), np.array([True, False]),
              np.array([1, 2], np.float16), np.array([7], np.uint8), np.zeros((0, 3), np.int32)]
    seeds = []
    for i, arr in enumerate(arrays):
        seeds.append(S.numpy_to_tensor(arr, f"t{i}", use_raw_data=bool(i % 2)).SerializeToString())
    seeds.append(S.numpy_to_tensor(np.array([b"ab", b"", b"xyz"], dtype=object),
                                   "s").SerializeToString())
    return seeds


def _blob_seeds() -> list[bytes]:
    return [S.serialize_blob("w", np.arange(4, dtype=np.float32).reshape(2, 2)),
            S.serialize_blob("s", "a string blob"),
            S.serialize_blob("i", np.array([3, 1, 2], np.int32))]


def _plan_seed() -> bytes:
    plan = caffe2_pb2.PlanDef(name="plan")
    net = plan.network.add(name="n")
    net.op.add(type="Sum", input=["a", "b"], output=["c"])
    step = plan.execution_step.add(name="root", num_iter=3)
    step.substep.add(name="inner").network.append("n")
    return plan.SerializeToString()


def _seeds() -> list[bytes]:
    seeds = [p.read_bytes() for p in sorted((DATA / "binary").glob("*.pb"))
             if p.stat().st_size < 30_000]
    seeds += [p.read_bytes() for p in sorted((DATA / "text").glob("*.pbtxt"))
              if p.stat().st_size < 10_000]
    op_tests = sorted((DATA / "serialized_op_tests").glob("*/*.pb"))
    seeds += [p.read_bytes() for p in op_tests[::12]]
    seeds += [(DATA / "serialized_op_tests" / "rank_loss_operator_test.test_pair_wise_loss_batch"
               / name).read_bytes() for name in ("op.pb", "grad_0.pb")]
    seeds += _tensor_seeds() + _blob_seeds() + [_plan_seed(), _nested_netdef(20)]
    return seeds


SEEDS = _seeds()
HUGE_LENGTHS = [2 ** 31 - 1, 2 ** 31, 2 ** 32 + 7, 2 ** 62, 2 ** 63 - 1, 2 ** 64 - 1]


@st.composite
def mutated_bytes(draw) -> bytes:
    """A fixture (or a programmatic proto) damaged in one or more ways."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "truncate", "splice", "huge_length", "random",
                                     "insert_random", "nest"]))
        if kind == "flip" and data:
            for _ in range(draw(st.integers(1, 8))):
                pos = draw(st.integers(0, len(data) - 1))
                data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate" and data:
            data = data[:draw(st.integers(0, len(data) - 1))]
        elif kind == "splice":
            other = draw(st.sampled_from(SEEDS))
            cut_a = draw(st.integers(0, len(data)))
            cut_b = draw(st.integers(0, len(other)))
            data = data[:cut_a] + other[cut_b:]
        elif kind == "huge_length":
            tag = _varint(draw(st.integers(1, 20)) << 3 | 2)
            length = draw(st.sampled_from(HUGE_LENGTHS))
            prefix = _varint(length) if draw(st.booleans()) else \
                b"\xff" * draw(st.integers(9, 12)) + b"\x01"  # over-long varint
            pos = draw(st.integers(0, len(data)))
            data = data[:pos] + tag + prefix + data[pos:]
        elif kind == "random":
            data = bytearray(draw(st.binary(max_size=200)))
        elif kind == "insert_random":
            pos = draw(st.integers(0, len(data)))
            data = data[:pos] + draw(st.binary(min_size=1, max_size=32)) + data[pos:]
        elif kind == "nest":
            depth = draw(st.sampled_from([2, 30, 34, 35, 50, 64, 65, 200, 5000]))
            nest = _nested_netdef(depth)
            data = bytearray(_field(2, _field(5, _field(8, nest))) + data
                             if draw(st.booleans()) else nest)
    return bytes(data)


def _try(fn: Callable[..., Any], *args: Any, family: type = EnforceError) -> Any:
    """``fn(*args)``, or the refusal if it is of ``family`` (anything else fails the test)."""
    try:
        return fn(*args)
    except family as exc:
        assert str(exc).strip(), "an error without a message"
        return exc


def _check_tensor(t: caffe2_pb2.TensorProto, ws: c2lite.Workspace) -> None:
    """tensor_to_numpy and Workspace.feed_blob agree: both succeed alike or both refuse."""
    arr = _try(S.tensor_to_numpy, t, family=ProtoError)
    fed = _try(ws.feed_blob, "fuzzed", t)
    if isinstance(arr, ProtoError):
        assert isinstance(fed, EnforceError)
        return
    assert isinstance(arr, np.ndarray)
    assert arr.size <= S.MAX_TENSOR_ELEMENTS
    assert fed is True
    got = ws.fetch_blob("fuzzed")
    assert got.shape == arr.shape and got.dtype == arr.dtype
    if arr.dtype != object:
        assert got.tobytes() == arr.tobytes()


def _decode_everything(data: bytes, ws: c2lite.Workspace) -> None:
    for message_type in (caffe2_pb2.NetDef, caffe2_pb2.OperatorDef, caffe2_pb2.PlanDef,
                         caffe2_pb2.TensorProto, caffe2_pb2.BlobProto):
        msg = _try(S.parse_proto, data, message_type, family=ProtoError)
        if isinstance(msg, ProtoError):
            assert message_type.DESCRIPTOR.full_name in str(msg)
            continue
        assert isinstance(msg, message_type)
        if message_type is caffe2_pb2.TensorProto:
            _check_tensor(msg, ws)
        elif message_type is caffe2_pb2.BlobProto and msg.HasField("tensor"):
            _check_tensor(msg.tensor, ws)
    _try(S.deserialize_blob, data, family=ProtoError)
    for read in (S.read_net, S.read_plan):
        loaded = _try(read, data, family=ProtoError)
        if not isinstance(loaded, ProtoError):
            assert loaded.format in ("binary", "text") and loaded.path is None


@pytest.fixture(scope="module")
def fuzz_dir():
    with tempfile.TemporaryDirectory(prefix="c2lite-fuzz-") as folder:
        yield Path(folder)


# ----------------------------------------------------------------------------------------
# Fuzzing
# ----------------------------------------------------------------------------------------

@FUZZ
@given(mutated_bytes())
def test_fuzz_bytes_every_decoder(data):
    _decode_everything(data, c2lite.Workspace())


@settings(FUZZ, max_examples=500)
@given(mutated_bytes(), st.sampled_from([".pb", ".pbtxt", ".prototxt", "", ".bin"]))
def test_fuzz_files_name_the_file(fuzz_dir, data, suffix):
    path = fuzz_dir / f"fuzzed{suffix}"
    path.write_bytes(data)
    for read in (S.read_net, S.load_net):
        result = _try(read, path, family=ProtoError)
        if isinstance(result, ProtoError):
            assert result.path == str(path) and str(path) in str(result)
    result = _try(S.read_net, str(path), family=ProtoError)
    if not isinstance(result, ProtoError):
        assert result.path == str(path)


_DIMS = st.one_of(st.integers(0, 4), st.sampled_from([-1, -(2 ** 40), 10 ** 12, 2 ** 31,
                                                       2 ** 63 - 1]))
_INTS = st.lists(st.integers(-(2 ** 31), 2 ** 31 - 1), max_size=6)


@st.composite
def fuzzed_tensor(draw) -> tuple[caffe2_pb2.TensorProto, bytes]:
    """Any combination of TensorProto fields, plus wire bytes to append (unknown enums)."""
    t = caffe2_pb2.TensorProto()
    if draw(st.booleans()):
        t.name = draw(st.text(max_size=5))
    dims = draw(st.lists(_DIMS, max_size=4))
    if int(np.prod([max(d, 1) for d in dims], dtype=object)) > S.MAX_TENSOR_ELEMENTS:
        # A zero beside a huge dim is the known bug pinned by
        # test_zero_beside_huge_dim_is_a_proto_error (xfail); leave it out of the fuzz.
        dims = [d for d in dims if d != 0]
    t.dims.extend(dims)
    t.data_type = draw(st.sampled_from(sorted(DT.DataType.values())))
    for name in draw(st.sets(st.sampled_from(["float_data", "int32_data", "int64_data",
                                              "double_data", "string_data", "byte_data",
                                              "raw_data"]), max_size=2)):
        if name == "float_data":
            t.float_data.extend(draw(st.lists(st.floats(width=32), max_size=6)))
        elif name == "double_data":
            t.double_data.extend(draw(st.lists(st.floats(), max_size=6)))
        elif name == "int32_data":
            t.int32_data.extend(draw(_INTS))
        elif name == "int64_data":
            t.int64_data.extend(draw(st.lists(st.integers(-(2 ** 63), 2 ** 63 - 1),
                                              max_size=6)))
        elif name == "string_data":
            t.string_data.extend(draw(st.lists(st.binary(max_size=4), max_size=6)))
        else:
            setattr(t, name, draw(st.binary(max_size=48)))
    if draw(st.integers(0, 4)) == 0:
        t.data_format = draw(st.integers(0, 20))
    if draw(st.integers(0, 3)) == 0:
        t.segment.begin = draw(st.integers(-3, 10))
        t.segment.end = draw(st.integers(-3, 10))
    extra = b""
    if draw(st.integers(0, 4)) == 0:  # a data_type number this schema does not know
        extra = _varint(2 << 3) + _varint(draw(st.integers(-3, 40)) & (2 ** 64 - 1))
    return t, extra


@settings(FUZZ, max_examples=2000)
@given(fuzzed_tensor(), st.sampled_from(["Tensor", "", "std::string", "junk"]))
def test_fuzz_tensor_fields(tensor_and_extra, blob_type):
    t, extra = tensor_and_extra
    ws = c2lite.Workspace()
    _check_tensor(t, ws)
    data = t.SerializeToString() + extra
    parsed = _try(S.parse_proto, data, DT, family=ProtoError)
    if not isinstance(parsed, ProtoError):
        _check_tensor(parsed, ws)
    blob = caffe2_pb2.BlobProto(name="b", type=blob_type).SerializeToString()
    blob += _field(3, data)  # BlobProto.tensor
    _try(S.deserialize_blob, blob, family=ProtoError)


# ----------------------------------------------------------------------------------------
# Deep nesting
# ----------------------------------------------------------------------------------------

def test_nesting_that_fits_round_trips():
    data = _nested_netdef(30)
    net = S.parse_proto(data, caffe2_pb2.NetDef)
    assert S.read_net(data).proto == net


@pytest.mark.parametrize("depth", [50, 200, 5000])
def test_deep_nesting_is_refused_everywhere(depth, tmp_path):
    """Nets nested via Argument.n: bytes, .pb and .pbtxt files, inside a PlanDef and an
    OperatorDef, all refused with a ProtoError about the depth and naming the file."""
    data = _nested_netdef(depth)
    with pytest.raises(ProtoError, match="(?i)depth|nest"):
        S.read_net(data)
    binary, text = tmp_path / "deep.pb", tmp_path / "deep.pbtxt"
    binary.write_bytes(data)
    text.write_text(_nested_text(depth))
    for path in (binary, text):
        with pytest.raises(ProtoError, match="(?i)depth|deep|nest") as info:
            S.read_net(path)
        assert info.value.path == str(path) and str(path) in str(info.value)
    with pytest.raises(ProtoError):
        S.parse_proto(_field(3, data), caffe2_pb2.PlanDef)              # PlanDef.network
    with pytest.raises(ProtoError):
        S.parse_proto(_field(5, _field(8, data)), caffe2_pb2.OperatorDef)  # arg.n
    with pytest.raises(ProtoError):
        S.read_plan(_field(3, data))


@pytest.mark.parametrize("depth", [50, 200, 5000])
def test_programmatic_nesting_is_refused_like_wire_nesting(depth, tmp_path):
    """The same deep nets built with the message API. Saving them either works or raises
    ProtoError (never RecursionError), and whatever was saved is refused on loading."""
    net = caffe2_pb2.NetDef(name="root")
    current = net
    for level in range(depth - 1):
        current = current.op.add(type="If").arg.add(name="then_net").n
        current.name = f"n{level}"
    with pytest.raises(ProtoError, match="(?i)depth"):
        S.read_net(net.SerializeToString())
    for name in ("deep.pb", "deep.pbtxt"):
        path = tmp_path / name
        saved = _try(S.save_net, net, path, family=ProtoError)
        if isinstance(saved, ProtoError):
            assert not path.exists()
            continue
        with pytest.raises(ProtoError) as info:
            S.read_net(path)
        assert info.value.path == str(path)


def test_nesting_limit_message_names_the_constant(monkeypatch):
    monkeypatch.setattr(S, "MAX_NET_NESTING", 10)
    with pytest.raises(ProtoError, match=r"nested 1[1-9] deep .*MAX_NET_NESTING"):
        S.read_net(_nested_netdef(20))


def test_max_net_nesting_refuses_before_the_decoder_limit():
    """Every NetDef level costs three message levels and the protobuf decoder stops at 100
    (about 34 nets), so MAX_NET_NESTING (32) is what refuses a deep binary file, with the
    same message as for text; deeper still, the decoder's own refusal is in plain words."""
    assert S.MAX_NET_NESTING < 34
    S.parse_proto(_nested_netdef(S.MAX_NET_NESTING), caffe2_pb2.NetDef)
    with pytest.raises(ProtoError, match="MAX_NET_NESTING"):
        S.parse_proto(_nested_netdef(S.MAX_NET_NESTING + 1), caffe2_pb2.NetDef)
    with pytest.raises(ProtoError, match="nested deeper than the protobuf decoder allows"):
        S.parse_proto(_nested_netdef(40), caffe2_pb2.NetDef)


# ----------------------------------------------------------------------------------------
# Size and element limits
# ----------------------------------------------------------------------------------------

def test_file_size_limit_applies_to_every_entry_point(tmp_path, monkeypatch):
    net = (DATA / "binary" / "hmc_onnx-export_predict_net.pb").read_bytes()
    path = tmp_path / "net.pb"
    path.write_bytes(net)
    plan_path = tmp_path / "plan.pb"
    plan_path.write_bytes(_plan_seed() * 3)  # concatenated messages still decode
    text_path = tmp_path / "net.pbtxt"
    text_path.write_text('name: "' + "x" * 200 + '"')
    blob = S.serialize_blob("w", np.zeros(64, np.float32))
    monkeypatch.setattr(S, "MAX_PROTO_BYTES", 100)
    for load, where in ((S.read_net, path), (S.load_net, path), (S.read_plan, plan_path),
                        (S.read_net, text_path)):
        with pytest.raises(ProtoError, match=r"exceeds the limit of 100 bytes "
                                             r"\(MAX_PROTO_BYTES\)") as info:
            load(where)
        assert info.value.path == str(where)
    for call in (lambda: S.read_net(net), lambda: S.deserialize_blob(blob),
                 lambda: S.parse_proto(blob, caffe2_pb2.BlobProto),
                 lambda: S.parse_proto(net, caffe2_pb2.OperatorDef),
                 lambda: S.read_net(text_path.read_bytes()),
                 lambda: S.net_from_bytes_or_text(text_path.read_text())):
        with pytest.raises(ProtoError, match=r"exceeds the limit of 100 bytes"):
            call()
    # at the limit itself, still accepted
    monkeypatch.setattr(S, "MAX_PROTO_BYTES", len(net))
    assert len(S.read_net(path).proto.op) == 14


def _peak(fn: Callable[[], Any]) -> tuple[int, Any]:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        try:
            result = fn()
        except EnforceError as exc:
            result = exc
        return tracemalloc.get_traced_memory()[1] - start, result
    finally:
        tracemalloc.stop()


def test_tiny_tensor_claiming_a_trillion_elements_allocates_nothing():
    t = caffe2_pb2.TensorProto(name="claims_1e12", dims=[10 ** 12], data_type=DT.FLOAT)
    data = t.SerializeToString()
    assert len(data) <= 24
    blob = caffe2_pb2.BlobProto(name="b", type="Tensor", tensor=t).SerializeToString()
    ws = c2lite.Workspace()
    calls = {
        "tensor_to_numpy": lambda: S.tensor_to_numpy(S.parse_proto(data, DT)),
        "deserialize_blob": lambda: S.deserialize_blob(blob),
        "feed_blob": lambda: ws.feed_blob("x", caffe2_pb2.TensorProto.FromString(data)),
    }
    for name, call in calls.items():
        peak, result = _peak(call)
        assert isinstance(result, ProtoError), name
        assert "MAX_TENSOR_ELEMENTS" in str(result) and "1000000000000" in str(result)
        assert peak < 256 * 1024, f"{name} allocated {peak} bytes"
    assert not ws.has_blob("x")


@pytest.mark.parametrize("dims", [[0, 2 ** 62], [0, 2 ** 63 - 1], [0, 2 ** 61, 8],
                                  [0, 2 ** 31, 2 ** 31]])
def test_zero_beside_huge_dim_is_a_proto_error(dims):
    t = caffe2_pb2.TensorProto(name="z", dims=dims, data_type=DT.FLOAT)
    with pytest.raises(ProtoError, match="MAX_TENSOR_ELEMENTS"):
        S.tensor_to_numpy(t)


@pytest.mark.parametrize("fields", [
    {"data_type": DT.FLOAT}, {"data_type": DT.STRING}, {"data_type": DT.BYTE},
    {"data_type": DT.DOUBLE, "raw_data": b"\0" * 8},
    {"data_type": DT.FLOAT, "data_format": DT.FMT_BFLOAT16},
    {"data_type": DT.INT64, "segment": DT.Segment(begin=0, end=2 ** 31 - 1)},
])
def test_claims_within_the_limit_but_without_data_allocate_nothing(fields):
    t = caffe2_pb2.TensorProto(name="liar", dims=[2 ** 31 - 1], **fields)
    peak, result = _peak(lambda: S.tensor_to_numpy(S.parse_proto(t.SerializeToString(), DT)))
    assert isinstance(result, ProtoError) and "liar" in str(result)
    assert peak < 256 * 1024


def test_feed_blob_refusal_leaves_the_blob_alone():
    ws = c2lite.Workspace()
    ws.feed_blob("x", np.arange(3, dtype=np.float32))
    bad = caffe2_pb2.TensorProto(dims=[4], data_type=DT.FLOAT, float_data=[1.0])
    with pytest.raises(ProtoError, match="needs 4 but float_data holds 1"):
        ws.feed_blob("x", bad)
    assert ws.fetch_blob("x").tolist() == [0, 1, 2]


def test_feed_blob_refusal_names_the_blob():
    ws = c2lite.Workspace()
    bad = caffe2_pb2.TensorProto(dims=[4], data_type=DT.FLOAT, float_data=[1.0])
    with pytest.raises(ProtoError) as info:
        ws.feed_blob("weights", bad)
    assert info.value.blob == "weights"


def test_special_files(tmp_path, monkeypatch):
    """An endless character device and a directory are refused before any read."""
    monkeypatch.setattr(S, "MAX_PROTO_BYTES", 4096)
    with pytest.raises(ProtoError, match="not a regular file") as info:
        S.read_net("/dev/zero")
    assert info.value.path == "/dev/zero"
    with pytest.raises(ProtoError) as info:
        S.read_net(tmp_path)
    assert str(tmp_path) in str(info.value)


def _call_with_timeout(fn: Callable[[], Any], fifo: Path, seconds: float) -> Any:
    """``fn()`` in a thread; a call still blocked after ``seconds`` is unblocked by opening
    the FIFO for writing (the reader then sees end of file) and reported as "blocked"."""
    box: list[Any] = []

    def target() -> None:
        try:
            box.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
        thread.join(5)
        return "blocked"
    return box[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_load_npz_refuses_a_fifo_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    result = _call_with_timeout(lambda: S.load_npz(fifo), fifo, 3)
    assert isinstance(result, ProtoError) and "not a regular file" in str(result)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_read_net_refuses_a_fifo_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.pb"
    os.mkfifo(fifo)
    result = _call_with_timeout(lambda: S.read_net(fifo), fifo, 2)
    assert isinstance(result, ProtoError), result


# ----------------------------------------------------------------------------------------
# No code execution: .npz archives and pickles
# ----------------------------------------------------------------------------------------

def _make_marker(path: str) -> str:
    """What the pickle payload runs when unpickled: it creates ``path``."""
    Path(path).write_text("pickle executed")
    return path


class _Payload:
    """An object whose unpickling calls _make_marker(path)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (_make_marker, (self.path,))


def _pickled_npz(folder: Path) -> tuple[Path, Path]:
    marker = folder / "PWNED"
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = _Payload(str(marker)), "x"
    path = folder / "evil.npz"
    np.savez(path, weights=np.ones(3, np.float32), evil=arr)
    assert not marker.exists()
    return path, marker


def test_load_npz_reads_plain_archives(tmp_path):
    path = tmp_path / "ok.npz"
    values = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.array(["a", "bc"]),
              "e": np.zeros((0, 2), np.int64)}
    np.savez_compressed(path, **values)
    loaded = S.load_npz(path)
    assert sorted(loaded) == sorted(values)
    for key, value in values.items():
        assert loaded[key].dtype == value.dtype
        np.testing.assert_array_equal(loaded[key], value)
    assert S.load_npz(str(path)).keys() == loaded.keys()


def test_pickle_payload_is_live_when_pickles_are_allowed(tmp_path):
    """Control: the payload really does run on an unpickling load, so the next test means
    something."""
    path, marker = _pickled_npz(tmp_path)
    with np.load(path, allow_pickle=True) as archive:
        archive["evil"]
    assert marker.exists()


def test_load_npz_refuses_pickles_without_running_them(tmp_path):
    path, marker = _pickled_npz(tmp_path)
    with pytest.raises(ProtoError, match="evil.*(pickle|Python objects)") as info:
        S.load_npz(path)
    assert info.value.path == str(path) and str(path) in str(info.value)
    assert not marker.exists()
    # a bare pickle renamed .npz is not even opened as an archive
    raw = tmp_path / "raw.npz"
    raw.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(ProtoError, match="not a .npz archive"):
        S.load_npz(raw)
    assert not marker.exists()


def _npy_bytes(header: dict, body: bytes) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + body


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, payload in members.items():
            z.writestr(name, payload)
    return path


def test_load_npz_refusals_name_the_file(tmp_path):
    ok = _npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (2,)}, b"\0" * 8)
    huge = _npy_bytes({"descr": "<f8", "fortran_order": False, "shape": (10 ** 12,)}, b"")
    short = _npy_bytes({"descr": "<f8", "fortran_order": False, "shape": (2 ** 30,)}, b"\0" * 16)
    hollow = _npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (0, 2 ** 62)}, b"")
    valid = tmp_path / "valid.npz"
    np.savez(valid, a=np.arange(100))
    cases = {
        "missing": (tmp_path / "missing.npz", "No such file"),
        "directory": (tmp_path, "directory"),
        "empty": (tmp_path / "empty.npz", "not a .npz archive"),
        "npy": (tmp_path / "single.npz", "single .npy array"),
        "text": (tmp_path / "text.npz", "not a zip archive"),
        "truncated": (tmp_path / "truncated.npz", "cannot read"),
        "huge": (_zip(tmp_path / "huge.npz", {"h.npy": huge}), "MAX_TENSOR_ELEMENTS"),
        "short": (_zip(tmp_path / "short.npz", {"s.npy": short}), "needs 8589934592 bytes"),
        "hollow": (_zip(tmp_path / "hollow.npz", {"z.npy": hollow}), "MAX_TENSOR_ELEMENTS"),
        "not_npy": (_zip(tmp_path / "other.npz", {"a.npy": ok, "notes.txt": b"hello"}),
                    "'notes.txt' is not a .npy array"),
        "bad_header": (_zip(tmp_path / "hdr.npz", {"b.npy": b"\x93NUMPY\x01\x00\x10\x00{'x': 1}"
                                                  + b" " * 8}), "cannot read"),
    }
    (tmp_path / "empty.npz").write_bytes(b"")
    np.save(tmp_path / "single.npy", np.ones(3))
    os.replace(tmp_path / "single.npy", tmp_path / "single.npz")
    (tmp_path / "text.npz").write_text("weights = [1, 2, 3]")
    (tmp_path / "truncated.npz").write_bytes(valid.read_bytes()[:200])
    for label, (path, message) in cases.items():
        peak, result = _peak(lambda: S.load_npz(path))
        assert isinstance(result, ProtoError), label
        assert message in str(result), (label, str(result))
        assert result.path == str(path) and str(path) in str(result), label
        assert peak < 4 << 20, (label, peak)


@settings(FUZZ, max_examples=300)
@given(st.data())
def test_fuzz_npz(fuzz_dir, data):
    arrays = {f"a{i}": data.draw(hnp.arrays(data.draw(st.sampled_from(
        ["<f4", "<i8", "|b1", "<f2", "|u1"])), hnp.array_shapes(min_dims=0, max_side=4)))
        for i in range(data.draw(st.integers(1, 3)))}
    buf = io.BytesIO()
    (np.savez_compressed if data.draw(st.booleans()) else np.savez)(buf, **arrays)
    raw = bytearray(buf.getvalue())
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[:data.draw(st.integers(0, len(raw)))]
    path = fuzz_dir / "fuzzed.npz"
    path.write_bytes(raw)
    result = _try(S.load_npz, path, family=ProtoError)
    if isinstance(result, ProtoError):
        assert result.path == str(path)
    else:
        assert all(isinstance(v, np.ndarray) and v.dtype != object for v in result.values())


def test_no_decoder_imports_pickle():
    """Static guard: the loading code never unpickles or evaluates anything it reads."""
    import c2lite.serialization as module
    source = Path(module.__file__).read_text()
    for forbidden in ("import pickle", "pickle.load", "allow_pickle=True", "eval(", "exec(",
                      "marshal"):
        assert forbidden not in source, forbidden
    for line in source.splitlines():
        if "np.load(" in line:
            assert "allow_pickle=False" in line, line
