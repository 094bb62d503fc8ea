"""Reading and writing Caffe2 protobufs: nets, plans, tensors and blobs.

* ``read_net`` / ``load_net`` / ``save_net`` (and the ``*_plan`` twins) handle binary
  (``.pb``) and text (``.pbtxt``, ``.prototxt``, ``.txt``) files, or raw bytes whose format
  is detected from the content. Text files that use spellings of older caffe2.proto
  versions (``cuda_gpu_id``, ``device_type: CUDA``, ``net_type``, the 2015 names
  ``operators``/``inputs``/``outputs``/``args``) are upgraded, and each upgrade is reported.
* ``parse_proto`` is the one safe binary decoder: size limit, required fields, NetDef
  nesting limit, and every failure surfaces as :class:`c2lite.errors.ProtoError`.
* ``tensor_to_numpy`` / ``numpy_to_tensor`` convert TensorProto for every DataType, checking
  the claimed shape against the data actually present before allocating anything.
* ``blob_to_proto`` / ``proto_to_blob`` / ``serialize_blob`` / ``deserialize_blob`` handle
  BlobProto for tensors and strings.
"""
from __future__ import annotations

import logging
import os
import stat
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable, Literal, Optional, TypeVar, Union

import numpy as np
from google.protobuf import text_format, unknown_fields
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from c2lite.errors import ProtoError
from c2lite.proto import caffe2_pb2

__all__ = [
    "MAX_PROTO_BYTES", "MAX_NET_NESTING", "MAX_TENSOR_ELEMENTS", "LoadedProto",
    "read_net", "load_net", "save_net", "read_plan", "load_plan", "save_plan",
    "parse_proto", "parse_text_proto", "net_from_bytes_or_text", "upgrade_legacy_text",
    "count_unknown_fields", "tensor_to_numpy", "numpy_to_tensor", "assemble_tensor",
    "blob_to_proto", "proto_to_blob", "serialize_blob", "deserialize_blob",
]

logger = logging.getLogger("c2lite.serialization")

#: Largest serialized proto (file or byte string) that is decoded at all.
MAX_PROTO_BYTES: int = 2 * 1024 ** 3
#: Most NetDefs allowed on one path of nesting (a net inside an If inside a net ...). Each
#: nested net costs three message levels and the binary decoder stops at 100, so 32 is the
#: deepest that both loads from binary and is enforced the same way for text and for saving.
MAX_NET_NESTING: int = 32
#: Most elements a TensorProto may claim.
MAX_TENSOR_ELEMENTS: int = 2 ** 31
#: Message nesting limit for the text parser (the binary decoder's own limit is 100).
TEXT_MAX_DEPTH: int = 100

Format = Literal["binary", "text"]
Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]
M = TypeVar("M", bound=Message)

BINARY_SUFFIXES = frozenset({".pb"})
TEXT_SUFFIXES = frozenset({".pbtxt", ".prototxt", ".txt"})

_NETDEF = "caffe2.NetDef"
DataType = caffe2_pb2.TensorProto.DataType


@dataclass
class LoadedProto:
    """A decoded message plus how it was stored and which legacy spellings were upgraded."""

    proto: Message
    format: Format
    upgrades: list[str] = field(default_factory=list)
    path: Optional[str] = None


# ---------------------------------------------------------------------------------------
# Low-level decoding
# ---------------------------------------------------------------------------------------

def _type_name(message_type: Any) -> str:
    return message_type.DESCRIPTOR.full_name


def parse_proto(data: Union[bytes, bytearray, memoryview], message_type: type[M], *,
                path: Optional[str] = None) -> M:
    """Decode binary ``data`` as ``message_type``; every failure raises ProtoError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"parse_proto expects bytes, got {type(data).__name__}")
    name = _type_name(message_type)
    if len(data) > MAX_PROTO_BYTES:
        raise ProtoError(f"{name} of {len(data)} bytes exceeds the limit of "
                         f"{MAX_PROTO_BYTES} bytes (MAX_PROTO_BYTES)", path=path)
    msg = message_type()
    try:
        msg.ParseFromString(data if isinstance(data, bytes) else bytes(data))
    except Exception as exc:  # DecodeError, depth limit, anything the decoder throws
        if "MaxDepth" in str(exc) or "recursion" in str(exc).lower():
            raise ProtoError(f"cannot decode binary {name} ({len(data)} bytes): messages are "
                             "nested deeper than the protobuf decoder allows (depth limit 100 "
                             f"levels, about {MAX_NET_NESTING} nets inside nets)", path=path) from exc
        raise ProtoError(f"cannot decode binary {name} ({len(data)} bytes): {exc}",
                         path=path) from exc
    _validate(msg, path)
    return msg


def _validate(msg: Message, path: Optional[str]) -> None:
    """Required fields present and NetDef nesting within MAX_NET_NESTING."""
    name = msg.DESCRIPTOR.full_name
    try:
        if not msg.IsInitialized():
            missing = msg.FindInitializationErrors()
            shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
            raise ProtoError(f"{name} is missing required fields: {shown}", path=path)
        depth = _net_depth(msg)
    except ProtoError:
        raise
    except Exception as exc:
        raise ProtoError(f"cannot inspect decoded {name}: {exc}", path=path) from exc
    if depth > MAX_NET_NESTING:
        raise ProtoError(f"NetDefs nested {depth} deep in {name} (Argument.n / Argument.nets); "
                         f"the limit is {MAX_NET_NESTING} (MAX_NET_NESTING)", path=path)


@lru_cache(maxsize=None)
def _can_hold_net(desc: Descriptor) -> bool:
    """Whether a message of this type can contain a NetDef at any depth."""
    seen: set[str] = set()
    todo = [desc]
    while todo:
        d = todo.pop()
        if d.full_name == _NETDEF:
            return True
        if d.full_name in seen:
            continue
        seen.add(d.full_name)
        todo.extend(f.message_type for f in d.fields if f.message_type is not None)
    return False


def _net_depth(msg: Message) -> int:
    """Deepest count of NetDefs on one path from ``msg`` down (iterative, no recursion)."""
    deepest = 0
    stack: list[tuple[Message, int]] = [(msg, 0)]
    while stack:
        m, depth = stack.pop()
        if m.DESCRIPTOR.full_name == _NETDEF:
            depth += 1
            deepest = max(deepest, depth)
            if depth > MAX_NET_NESTING:
                return depth
        for fd, value in m.ListFields():
            if fd.message_type is None or not _can_hold_net(fd.message_type):
                continue
            children = value if fd.is_repeated else (value,)
            stack.extend((child, depth) for child in children)
    return deepest


def count_unknown_fields(msg: Message) -> int:
    """Number of unknown fields anywhere in ``msg`` (0 for a file that fits the schema)."""
    total = 0
    stack = [msg]
    while stack:
        m = stack.pop()
        total += len(unknown_fields.UnknownFieldSet(m))
        for fd, value in m.ListFields():
            if fd.message_type is not None:
                stack.extend(value if fd.is_repeated else (value,))
    return total


# ---------------------------------------------------------------------------------------
# Text format and legacy spellings
# ---------------------------------------------------------------------------------------

#: (message, old field name) -> current field name.
LEGACY_FIELD_NAMES: dict[tuple[str, str], str] = {
    ("caffe2.DeviceOption", "cuda_gpu_id"): "device_id",
    ("caffe2.NetDef", "net_type"): "type",
    ("caffe2.NetDef", "operators"): "op",
    ("caffe2.NetDef", "args"): "arg",
    ("caffe2.OperatorDef", "inputs"): "input",
    ("caffe2.OperatorDef", "outputs"): "output",
    ("caffe2.OperatorDef", "args"): "arg",
}

_TOKEN = re.compile(r"""
      (?P<space>\s+)
    | (?P<comment>\#[^\n]*)
    | (?P<string>"(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<number>\.?[0-9][0-9A-Za-z_.+-]*)
    | (?P<punct>.)
""", re.VERBOSE | re.DOTALL)


def _device_type_number(name: str) -> Optional[int]:
    enum = caffe2_pb2.DeviceTypeProto
    for candidate in (name, "PROTO_" + name):
        if candidate in enum.keys():
            return enum.Value(candidate)
    return None


def upgrade_legacy_text(text: str, descriptor: Descriptor) -> tuple[str, list[str]]:
    """Rewrite old field spellings (field-name position only) and enum-named device types.

    Returns the new text and one human-readable line per kind of upgrade made. Strings and
    comments are never touched: the text is tokenized, and the message type of every
    ``{ ... }`` block is tracked from ``descriptor`` so each rename applies only where the
    old schema had that field.
    """
    tokens = [(m.lastgroup, m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)
              if m.lastgroup not in ("space", "comment")]
    stack: list[Optional[Descriptor]] = [descriptor]
    last_field: Optional[FieldDescriptor] = None
    edits: list[tuple[int, int, str]] = []
    counts: Counter[str] = Counter()
    for i, (kind, value, start, end) in enumerate(tokens):
        prev = tokens[i - 1] if i else None
        after_colon = prev is not None and prev[0] == "punct" and prev[1] == ":"
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if kind == "ident" and not after_colon and nxt is not None \
                and nxt[0] == "punct" and nxt[1] in (":", "{", "<"):
            msg_desc = stack[-1]
            last_field = None
            if msg_desc is not None:
                new = LEGACY_FIELD_NAMES.get((msg_desc.full_name, value))
                if new is not None and value not in msg_desc.fields_by_name:
                    edits.append((start, end, new))
                    counts[f"{msg_desc.name}.{value} -> {new}"] += 1
                    value = new
                last_field = msg_desc.fields_by_name.get(value)
        elif kind == "ident" and after_colon and last_field is not None \
                and last_field.full_name == "caffe2.DeviceOption.device_type":
            number = _device_type_number(value)
            if number is not None:
                edits.append((start, end, str(number)))
                counts[f"DeviceOption.device_type enum name {value} -> {number}"] += 1
        elif kind == "punct" and value in ("{", "<"):
            stack.append(last_field.message_type if last_field is not None else None)
        elif kind == "punct" and value in ("}", ">") and len(stack) > 1:
            stack.pop()
    pieces, pos = [], 0
    for start, end, new in edits:
        pieces += [text[pos:start], new]
        pos = end
    pieces.append(text[pos:])
    lines = [f"{what} ({n} place{'' if n == 1 else 's'})" for what, n in counts.items()]
    return "".join(pieces), lines


def _text_parse(text: str, message_type: type[M]) -> M:
    msg = message_type()
    text_format.Parse(text, msg, max_recursion_depth=TEXT_MAX_DEPTH)
    return msg


def parse_text_proto(data: Union[str, bytes], message_type: type[M], *,
                     path: Optional[str] = None) -> tuple[M, list[str]]:
    """Parse text format, upgrading legacy spellings only if it fails to parse as written."""
    name = _type_name(message_type)
    if len(data) > MAX_PROTO_BYTES:
        raise ProtoError(f"text {name} of {len(data)} bytes exceeds the limit of "
                         f"{MAX_PROTO_BYTES} bytes (MAX_PROTO_BYTES)", path=path)
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtoError(f"text {name} is not valid UTF-8: {exc}", path=path) from exc
    else:
        text = data
    text = text.removeprefix("\ufeff")
    upgrades: list[str] = []
    try:
        msg = _text_parse(text, message_type)
    except Exception as first:
        try:
            upgraded, upgrades = upgrade_legacy_text(text, message_type.DESCRIPTOR)
        except Exception:
            upgrades = []
        if not upgrades:
            raise ProtoError(f"cannot parse text {name}: {first}", path=path) from first
        try:
            msg = _text_parse(upgraded, message_type)
        except Exception as second:
            raise ProtoError(f"cannot parse text {name}, even after upgrading legacy "
                             f"spellings ({'; '.join(upgrades)}): {second}",
                             path=path) from second
    _validate(msg, path)
    return msg, upgrades


# ---------------------------------------------------------------------------------------
# Files, format detection
# ---------------------------------------------------------------------------------------

def _read_file(path: str) -> bytes:
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise ProtoError("not a regular file (directories, pipes and devices are refused)",
                             path=path)
        size = info.st_size
        if size > MAX_PROTO_BYTES:
            raise ProtoError(f"file of {size} bytes exceeds the limit of {MAX_PROTO_BYTES} "
                             f"bytes (MAX_PROTO_BYTES)", path=path)
        with open(path, "rb") as f:
            data = f.read(MAX_PROTO_BYTES + 1)
    except OSError as exc:
        raise ProtoError(f"cannot read file: {exc.strerror or exc}", path=path) from exc
    if len(data) > MAX_PROTO_BYTES:
        raise ProtoError(f"file exceeds the limit of {MAX_PROTO_BYTES} bytes "
                         f"(MAX_PROTO_BYTES)", path=path)
    return data


def _format_from_suffix(path: str) -> Optional[Format]:
    suffix = os.path.splitext(path)[1].lower()
    if suffix in BINARY_SUFFIXES:
        return "binary"
    if suffix in TEXT_SUFFIXES:
        return "text"
    return None


_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def _looks_like_text(data: bytes) -> bool:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return _TEXT_CONTROL.search(text) is None


def _decode(data: bytes, message_type: type[M], fmt: Optional[Format],
            path: Optional[str]) -> LoadedProto:
    if fmt == "binary":
        return LoadedProto(parse_proto(data, message_type, path=path), "binary", [], path)
    if fmt == "text":
        msg, upgrades = parse_text_proto(data, message_type, path=path)
        return LoadedProto(msg, "text", upgrades, path)
    # Unknown format: decide from the content.
    if not data or not _looks_like_text(data):
        return _decode(data, message_type, "binary", path)
    try:
        return _decode(data, message_type, "text", path)
    except ProtoError as text_error:
        # A few tiny binary protos are printable UTF-8; accept one only if it fits the
        # schema exactly, so text garbage is never mistaken for binary with unknown fields.
        try:
            loaded = _decode(data, message_type, "binary", path)
        except ProtoError:
            raise text_error from None
        if count_unknown_fields(loaded.proto):
            raise text_error from None
        return loaded


def _read(src: Source, message_type: type[M]) -> LoadedProto:
    if isinstance(src, (bytes, bytearray, memoryview)):
        loaded = _decode(bytes(src), message_type, None, None)
    elif isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        data = _read_file(path)
        fmt = _format_from_suffix(path)
        try:
            loaded = _decode(data, message_type, fmt, path)
        except ProtoError as exc:
            if fmt == "binary" and data and _looks_like_text(data):
                exc.condition += " (the file looks like text format: name it .pbtxt)"
                exc.args = (str(exc),)
            raise
    else:
        raise TypeError(f"expected a path or bytes, got {type(src).__name__}")
    if loaded.format == "binary":
        unknown = count_unknown_fields(loaded.proto)
        if unknown:
            logger.warning("%s: %d unknown field(s) kept while decoding %s",
                           loaded.path or "<bytes>", unknown, _type_name(message_type))
    return loaded


def _log_upgrades(loaded: LoadedProto) -> None:
    for line in loaded.upgrades:
        logger.info("%s: upgraded legacy spelling: %s", loaded.path or "<bytes>", line)


def _as_message(obj: Any, full_name: str) -> Message:
    msg = obj if isinstance(obj, Message) else obj.Proto() if hasattr(obj, "Proto") else obj
    if not isinstance(msg, Message) or msg.DESCRIPTOR.full_name != full_name:
        raise TypeError(f"expected a {full_name} (or an object with .Proto()), "
                        f"got {type(obj).__name__}")
    return msg


def _save(msg: Message, path: Union[str, "os.PathLike[str]"], fmt: Optional[str]) -> None:
    target = os.fspath(path)
    fmt = fmt or _format_from_suffix(target) or "binary"
    if fmt not in ("binary", "text"):
        raise ValueError(f"format must be 'binary' or 'text', not {fmt!r}")
    name = msg.DESCRIPTOR.full_name
    if not msg.IsInitialized():
        missing = ", ".join(msg.FindInitializationErrors()[:8])
        raise ProtoError(f"cannot save {name}: required fields missing: {missing}", path=target)
    try:
        if fmt == "binary":
            data = msg.SerializeToString()
        else:
            data = text_format.MessageToString(msg).encode("utf-8")
    except Exception as exc:
        raise ProtoError(f"cannot serialize {name}: {exc}", path=target) from exc
    # Serialize fully before opening, so a failure never truncates an existing file.
    with open(target, "wb") as f:
        f.write(data)


# ---------------------------------------------------------------------------------------
# Public net / plan API
# ---------------------------------------------------------------------------------------

def read_net(src: Source) -> LoadedProto:
    """Decode a NetDef from a path (format by extension, else by content) or from bytes."""
    return _read(src, caffe2_pb2.NetDef)


def load_net(src: Source) -> caffe2_pb2.NetDef:
    """Return ``read_net(src).proto``, logging each legacy upgrade at INFO."""
    loaded = read_net(src)
    _log_upgrades(loaded)
    return loaded.proto


def save_net(net: Any, path: Union[str, "os.PathLike[str]"], *,
             format: Optional[Format] = None) -> None:
    """Write a NetDef (or object with ``.Proto()``): .pb binary, .pbtxt/.prototxt/.txt text."""
    _save(_as_message(net, _NETDEF), path, format)


def read_plan(src: Source) -> LoadedProto:
    """Decode a PlanDef from a path or bytes, like :func:`read_net`."""
    return _read(src, caffe2_pb2.PlanDef)


def load_plan(src: Source) -> caffe2_pb2.PlanDef:
    """Return ``read_plan(src).proto``, logging each legacy upgrade at INFO."""
    loaded = read_plan(src)
    _log_upgrades(loaded)
    return loaded.proto


def save_plan(plan: Any, path: Union[str, "os.PathLike[str]"], *,
              format: Optional[Format] = None) -> None:
    """Write a PlanDef (or an object with ``.Proto()``), like :func:`save_net`."""
    _save(_as_message(plan, "caffe2.PlanDef"), path, format)


def net_from_bytes_or_text(data: Union[bytes, str, Message], *,
                           path: Optional[str] = None) -> caffe2_pb2.NetDef:
    """A NetDef from serialized bytes (binary or text, detected), text ``str``, or a NetDef."""
    if isinstance(data, Message):
        return _as_message(data, _NETDEF)  # type: ignore[return-value]
    if isinstance(data, str):
        msg, upgrades = parse_text_proto(data, caffe2_pb2.NetDef, path=path)
        loaded = LoadedProto(msg, "text", upgrades, path)
    elif isinstance(data, (bytes, bytearray, memoryview)):
        loaded = _decode(bytes(data), caffe2_pb2.NetDef, None, path)
    else:
        raise TypeError(f"expected bytes, str or NetDef, got {type(data).__name__}")
    _log_upgrades(loaded)
    return loaded.proto  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------
# Tensors
# ---------------------------------------------------------------------------------------

# DataType -> (numpy dtype, TensorProto field holding the values)
_STORAGE: dict[int, tuple[np.dtype, str]] = {
    DataType.Value("FLOAT"): (np.dtype(np.float32), "float_data"),
    DataType.Value("INT32"): (np.dtype(np.int32), "int32_data"),
    DataType.Value("BYTE"): (np.dtype(np.uint8), "byte_data"),
    DataType.Value("STRING"): (np.dtype(object), "string_data"),
    DataType.Value("BOOL"): (np.dtype(np.bool_), "int32_data"),
    DataType.Value("UINT8"): (np.dtype(np.uint8), "int32_data"),
    DataType.Value("INT8"): (np.dtype(np.int8), "int32_data"),
    DataType.Value("UINT16"): (np.dtype(np.uint16), "int32_data"),
    DataType.Value("INT16"): (np.dtype(np.int16), "int32_data"),
    DataType.Value("INT64"): (np.dtype(np.int64), "int64_data"),
    DataType.Value("FLOAT16"): (np.dtype(np.float16), "int32_data"),
    DataType.Value("DOUBLE"): (np.dtype(np.float64), "double_data"),
}

_FROM_NUMPY: dict[np.dtype, int] = {
    np.dtype(np.float32): DataType.Value("FLOAT"),
    np.dtype(np.int32): DataType.Value("INT32"),
    np.dtype(np.bool_): DataType.Value("BOOL"),
    np.dtype(np.uint8): DataType.Value("UINT8"),
    np.dtype(np.int8): DataType.Value("INT8"),
    np.dtype(np.uint16): DataType.Value("UINT16"),
    np.dtype(np.int16): DataType.Value("INT16"),
    np.dtype(np.int64): DataType.Value("INT64"),
    np.dtype(np.float16): DataType.Value("FLOAT16"),
    np.dtype(np.float64): DataType.Value("DOUBLE"),
}

_STRING = DataType.Value("STRING")
_BYTE = DataType.Value("BYTE")
_FLOAT = DataType.Value("FLOAT")
_FMT_PROTOBUF = caffe2_pb2.TensorProto.FMT_PROTOBUF
_FMT_BFLOAT16 = caffe2_pb2.TensorProto.FMT_BFLOAT16


def _tensor_label(t: caffe2_pb2.TensorProto) -> str:
    return f"tensor '{t.name}'" if t.name else "tensor"


def _element_count(t: caffe2_pb2.TensorProto) -> int:
    """Product of dims, rejecting negative dims and counts over MAX_TENSOR_ELEMENTS."""
    count = extent = 1
    for d in t.dims:
        if d < 0:
            raise ProtoError(f"{_tensor_label(t)} has a negative dimension in dims "
                             f"{list(t.dims)}")
        count *= d
        extent *= max(d, 1)  # a zero dim must not hide absurd ones beside it
        if count > MAX_TENSOR_ELEMENTS or extent > MAX_TENSOR_ELEMENTS:
            raise ProtoError(f"{_tensor_label(t)} claims more than {MAX_TENSOR_ELEMENTS} "
                             f"elements (dims {list(t.dims)}, MAX_TENSOR_ELEMENTS)")
    return count


def _segment(t: caffe2_pb2.TensorProto, total: int) -> tuple[int, int]:
    if not t.HasField("segment"):
        return 0, total
    begin, end = t.segment.begin, t.segment.end
    if not 0 <= begin <= end <= total:
        raise ProtoError(f"{_tensor_label(t)} has segment [{begin}, {end}) outside its "
                         f"{total} elements (dims {list(t.dims)})")
    return begin, end


def _values(t: caffe2_pb2.TensorProto, count: int) -> np.ndarray:
    """The ``count`` stored values as a flat array, after checking they are all present."""
    label = _tensor_label(t)
    # proto2 keeps an unrecognised enum number as an unknown field and reports the default
    for item in unknown_fields.UnknownFieldSet(t):
        if item.field_number == 2:
            raise ProtoError(f"{label} has unknown data_type {item.data}")
    if t.data_type not in _STORAGE:
        kind = DataType.Name(t.data_type) if t.data_type in DataType.values() else t.data_type
        raise ProtoError(f"{label} has data_type {kind}, which cannot be read into an array")
    dtype, field_name = _STORAGE[t.data_type]

    def mismatch(where: str, present: int, expected: int) -> ProtoError:
        return ProtoError(f"{label} (dims {list(t.dims)}, {DataType.Name(t.data_type)}) "
                          f"needs {expected} but {where} holds {present}")

    if t.data_format not in (_FMT_PROTOBUF, _FMT_BFLOAT16) or \
            (t.data_format == _FMT_BFLOAT16 and t.data_type != _FLOAT):
        raise ProtoError(f"{label} has unsupported data_format {t.data_format} for "
                         f"{DataType.Name(t.data_type)}")
    if t.data_format == _FMT_BFLOAT16:
        raw = t.raw_data
        if len(raw) != 2 * count:
            raise mismatch("raw_data (bfloat16 bytes)", len(raw), 2 * count)
        halves = np.frombuffer(raw, dtype="<u2").astype(np.uint32)
        return (halves << 16).view(np.float32)
    if t.HasField("raw_data"):
        if t.data_type == _STRING:
            raise ProtoError(f"{label}: STRING tensors cannot use raw_data")
        raw = t.raw_data
        if len(raw) != count * dtype.itemsize:
            raise mismatch("raw_data (bytes)", len(raw), count * dtype.itemsize)
        if dtype == np.bool_:
            return np.frombuffer(raw, dtype=np.uint8) != 0
        return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)
    if t.data_type == _BYTE:
        raw = t.byte_data
        if len(raw) != count:
            raise mismatch("byte_data", len(raw), count)
        return np.frombuffer(raw, dtype=np.uint8).copy()
    stored = getattr(t, field_name)
    if len(stored) != count:
        raise mismatch(field_name, len(stored), count)
    if t.data_type == _STRING:
        out = np.empty(count, dtype=object)
        out[:] = list(stored)
        return out
    if dtype == np.float16:
        bits = np.fromiter(stored, dtype=np.int64, count=count)
        return bits.astype(np.uint16).view(np.float16)
    if dtype == np.bool_:
        return np.fromiter(stored, dtype=np.int64, count=count) != 0
    source = {"float_data": np.float32, "double_data": np.float64}.get(field_name, np.int64)
    return np.fromiter(stored, dtype=source, count=count).astype(dtype)


def tensor_to_numpy(t: caffe2_pb2.TensorProto) -> np.ndarray:
    """The tensor's values shaped by ``dims``; a partial ``segment`` gives its flat values."""
    total = _element_count(t)
    begin, end = _segment(t, total)
    values = _values(t, end - begin)
    if end - begin == total:
        return values.reshape(tuple(t.dims))
    return values


def assemble_tensor(chunks: Iterable[caffe2_pb2.TensorProto]) -> np.ndarray:
    """Join TensorProto chunks (each with a ``segment``) of one tensor into a full array."""
    chunks = list(chunks)
    if not chunks:
        raise ProtoError("assemble_tensor needs at least one chunk")
    first = chunks[0]
    total = _element_count(first)
    spans = []
    for chunk in chunks:
        if list(chunk.dims) != list(first.dims) or chunk.data_type != first.data_type:
            raise ProtoError(f"{_tensor_label(chunk)}: chunk dims/data_type "
                             f"{list(chunk.dims)}/{chunk.data_type} differ from the first "
                             f"chunk's {list(first.dims)}/{first.data_type}")
        spans.append((*_segment(chunk, total), chunk))
    spans.sort(key=lambda span: (span[0], span[1]))
    covered = 0
    for begin, end, _ in spans:  # the segments must tile [0, total) exactly
        if begin != covered:
            raise ProtoError(f"{_tensor_label(first)}: chunks leave a gap or overlap at "
                             f"element {min(begin, covered)} of {total}")
        covered = end
    if covered != total:
        raise ProtoError(f"{_tensor_label(first)}: chunks cover {covered} of {total} elements")
    # Everything is checked; only now are the values materialized.
    parts = [_values(chunk, end - begin) for begin, end, chunk in spans]
    return np.concatenate(parts).reshape(tuple(first.dims))


def _string_items(arr: np.ndarray) -> list[bytes]:
    items = []
    for item in arr.ravel().tolist():
        if isinstance(item, str):
            item = item.encode("utf-8")
        elif isinstance(item, (bytearray, memoryview, np.bytes_)):
            item = bytes(item)
        if not isinstance(item, bytes):
            raise ProtoError(f"a STRING tensor holds str or bytes, not {type(item).__name__}")
        items.append(item)
    return items


def numpy_to_tensor(arr: Any, name: Optional[str] = None, *, use_raw_data: bool = False,
                    data_type: Optional[int] = None) -> caffe2_pb2.TensorProto:
    """A TensorProto for ``arr`` (``use_raw_data``: fixed-size types as little-endian raw_data)."""
    arr = np.asarray(arr)
    t = caffe2_pb2.TensorProto()
    if name is not None:
        t.name = name
    t.dims.extend(arr.shape)
    if data_type is None:
        if arr.dtype.kind in "OSU":
            data_type = _STRING
        elif arr.dtype.newbyteorder("=") in _FROM_NUMPY:
            data_type = _FROM_NUMPY[arr.dtype.newbyteorder("=")]
        else:
            raise ProtoError(f"cannot store numpy dtype {arr.dtype} in a TensorProto")
    if data_type not in _STORAGE:
        raise ProtoError(f"cannot store data_type {data_type} in a TensorProto")
    t.data_type = data_type  # type: ignore[assignment]
    if data_type == _STRING:
        t.string_data.extend(_string_items(arr))
        return t
    dtype, field_name = _STORAGE[data_type]
    try:
        flat = np.ascontiguousarray(arr, dtype=dtype).ravel()
    except (TypeError, ValueError) as exc:
        raise ProtoError(f"cannot convert {arr.dtype} array to "
                         f"{DataType.Name(data_type)}: {exc}") from exc
    if use_raw_data:
        t.raw_data = flat.astype(dtype.newbyteorder("<"), copy=False).tobytes()
    elif data_type == _BYTE:
        t.byte_data = flat.tobytes()
    elif dtype == np.float16:
        t.int32_data.extend(flat.view(np.uint16).tolist())
    else:
        getattr(t, field_name).extend(flat.astype(
            np.int32 if field_name == "int32_data" else dtype).tolist())
    return t


# ---------------------------------------------------------------------------------------
# Blobs
# ---------------------------------------------------------------------------------------

TENSOR_BLOB_TYPE = "Tensor"
STRING_BLOB_TYPE = "std::string"


def blob_to_proto(name: str, value: Any) -> caffe2_pb2.BlobProto:
    """A BlobProto: type "std::string" for str/bytes, else type "Tensor" holding the array."""
    blob = caffe2_pb2.BlobProto(name=name)
    if isinstance(value, (str, bytes, bytearray)):
        blob.type = STRING_BLOB_TYPE
        blob.content = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    else:
        blob.type = TENSOR_BLOB_TYPE
        blob.tensor.CopyFrom(numpy_to_tensor(value, name))
    return blob


def proto_to_blob(blob: caffe2_pb2.BlobProto) -> Any:
    """The blob's value: an ndarray for "Tensor", bytes for "std::string" (as Caffe2 fetches it)."""
    if blob.type == TENSOR_BLOB_TYPE or (not blob.type and blob.HasField("tensor")):
        return tensor_to_numpy(blob.tensor)
    if blob.type == STRING_BLOB_TYPE:
        return bytes(blob.content)
    raise ProtoError(f"blob '{blob.name}' has type '{blob.type}', which c2lite cannot "
                     f"deserialize (supported: Tensor, std::string)")


def serialize_blob(name: str, value: Any) -> bytes:
    """``blob_to_proto(name, value)`` as bytes."""
    return blob_to_proto(name, value).SerializeToString()


def deserialize_blob(data: bytes) -> tuple[str, Any]:
    """Decode a serialized BlobProto into ``(name, value)``."""
    blob = parse_proto(data, caffe2_pb2.BlobProto)
    return blob.name, proto_to_blob(blob)


# ---------------------------------------------------------------------------------------
# NumPy archives
# ---------------------------------------------------------------------------------------

def load_npz(path: Union[str, "os.PathLike[str]"]) -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` archive by name, never unpickling anything.

    The file is opened with ``np.load(path, allow_pickle=False)``. Before any array is read,
    each member's ``.npy`` header is checked: object dtypes (pickles) are refused, and the
    claimed shape must fit MAX_TENSOR_ELEMENTS and the bytes the member actually holds, so a
    small file cannot make this allocate a huge array. Every failure (missing, not a zip,
    corrupt, pickled, too large) raises ProtoError naming the file.
    """
    import stat

    from numpy.lib import format as npy_format

    target = os.fspath(path)
    try:
        mode = os.stat(target).st_mode
        if stat.S_ISDIR(mode):
            raise ProtoError("cannot read .npz archive: is a directory", path=target)
        if not stat.S_ISREG(mode):  # a FIFO or device could block or never end
            raise ProtoError("cannot read .npz archive: not a regular file", path=target)
        with open(target, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise ProtoError(f"cannot read .npz archive: {exc.strerror or exc}", path=target) from exc
    if head[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):
        what = "a single .npy array" if head.startswith(b"\x93NUM") else "not a zip archive"
        raise ProtoError(f"not a .npz archive ({what})", path=target)

    def check_member(archive: Any, info: Any) -> None:
        key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        with archive.zip.open(info) as member:
            if member.read(len(npy_format.MAGIC_PREFIX)) != npy_format.MAGIC_PREFIX:
                raise ProtoError(f"member '{key}' is not a .npy array", path=target)
            member.seek(0)
            version = npy_format.read_magic(member)
            if version == (1, 0):
                shape, _, dtype = npy_format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, _, dtype = npy_format.read_array_header_2_0(member)
            else:
                reader = getattr(npy_format, "_read_array_header", None)
                if reader is None:
                    raise ProtoError(f"array '{key}' uses .npy format version {version}, "
                                     "which this NumPy cannot read", path=target)
                shape, _, dtype = reader(member, version)
            header_bytes = member.tell()
        if dtype.hasobject:
            raise ProtoError(f"array '{key}' holds Python objects ({dtype}), stored as a "
                             "pickle; c2lite never unpickles (allow_pickle=False)",
                             path=target)
        count, extent = 1, 1  # extent skips zeros: (0, 2**62) is no array numpy can make
        for d in shape:
            count *= d
            extent *= max(d, 1)
            if extent > MAX_TENSOR_ELEMENTS:
                raise ProtoError(f"array '{key}' claims more than {MAX_TENSOR_ELEMENTS} "
                                 f"elements (shape {list(shape)}, MAX_TENSOR_ELEMENTS)",
                                 path=target)
        needed = count * dtype.itemsize
        if header_bytes + needed > info.file_size:
            raise ProtoError(f"array '{key}' (shape {list(shape)}, {dtype}) needs {needed} "
                             f"bytes but its member holds {info.file_size - header_bytes}",
                             path=target)

    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(target, allow_pickle=False) as archive:
            for info in archive.zip.infolist():
                check_member(archive, info)
            for key in archive.files:
                arrays[key] = archive[key]
    except ProtoError:
        raise
    except Exception as exc:  # BadZipFile, zlib.error, ValueError, EOFError, OSError, ...
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "pickle" in detail.lower():
            detail = f"refusing pickled data (allow_pickle=False): {detail}"
        raise ProtoError(f"cannot read .npz archive: {detail}", path=target) from exc
    return arrays
