"""Draw a NetDef as a Graphviz graph, in the style of Caffe2's ``net_drawer``.

:func:`net_to_dot` writes DOT text itself (no pydot): operators are green boxes labelled
``"Type (op#i)"`` or ``"name/Type (op#i)"``, blobs are octagons, edges run blob -> op -> blob.
Every write of a blob starts a new version of it, drawn as a new node, so an in-place op or an
overwrite is visible as two nodes with the same label. Gradient ops are drawn in another colour.
With ``minimal=True`` only op nodes are drawn, joined producer -> consumer.

:func:`render` writes ``.dot`` directly and runs Graphviz's ``dot`` for ``.svg``/``.png``/``.pdf``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any, Iterable, Optional

from c2lite.errors import EnforceError

__all__ = ["OP_COLOR", "GRADIENT_OP_COLOR", "net_to_dot", "render", "is_gradient_op",
           "escape_label", "RENDER_FORMATS"]

OP_COLOR = "#0F9D58"
GRADIENT_OP_COLOR = "#DB4437"
BLOB_COLOR = "#FFFFFF"
INPUT_BLOB_COLOR = "#E8F0FE"

#: File suffix -> Graphviz output format (``.dot`` is written without Graphviz).
RENDER_FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot"}
RENDER_TIMEOUT_S = 300

_GRADIENT_SUFFIXES = ("Gradient", "Grad")


def is_gradient_op(op: Any) -> bool:
    """True for ops marked ``is_gradient_op``; nets written before that field existed (2015-16)
    are recognised by the ``...Gradient`` / ``...Grad`` type-name convention."""
    if getattr(op, "is_gradient_op", False):
        return True
    return op.type.endswith(_GRADIENT_SUFFIXES)


def escape_label(text: str) -> str:
    """``text`` as the inside of a DOT double-quoted string that Graphviz shows verbatim.

    Backslashes are doubled (DOT gives ``\\n``, ``\\l``, ``\\N``... special meaning), quotes are
    escaped, and real line breaks become ``\\n`` centred line breaks.
    """
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            continue
        elif ord(ch) < 0x20 or ch == "\x7f":
            out.append(f"\\\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def _quote(text: str) -> str:
    return '"' + escape_label(text) + '"'


def _attrs(**attrs: Optional[str]) -> str:
    parts = [f"{key}={_quote(value)}" for key, value in attrs.items() if value is not None]
    return "[" + ", ".join(parts) + "]"


def op_label(op: Any, index: int) -> str:
    """``name/Type (op#i)`` when the op has a name, else ``Type (op#i)`` (net_drawer's text)."""
    head = f"{op.name}/{op.type}" if op.name else op.type
    return f"{head} (op#{index})"


def _op_node(index: int, op: Any) -> str:
    fill = GRADIENT_OP_COLOR if is_gradient_op(op) else OP_COLOR
    extra = []
    if op.engine:
        extra.append(f"engine: {op.engine}")
    tooltip = op_label(op, index) + ("\n" + "\n".join(extra) if extra else "")
    return f"  op{index} " + _attrs(label=op_label(op, index), shape="box", style="filled",
                                     fillcolor=fill, fontcolor="#FFFFFF", color=fill,
                                     tooltip=tooltip) + ";"


def net_to_dot(net_def: Any, rankdir: str = "LR", minimal: bool = False) -> str:
    """The net as DOT text. ``net_def`` is a NetDef, an object with ``Proto()``, or a list of
    OperatorDefs."""
    if rankdir not in ("LR", "TB", "RL", "BT"):
        raise EnforceError(f"rankdir must be one of LR, TB, RL, BT, not {rankdir!r}")
    if hasattr(net_def, "Proto"):
        net_def = net_def.Proto()
    if hasattr(net_def, "op"):
        ops = list(net_def.op)
        name = net_def.name or "net"
        external_inputs = set(net_def.external_input)
    else:
        ops = list(net_def)
        name = "ops"
        external_inputs = set()
    lines = [f"digraph {_quote(name)} {{",
             f"  graph {_attrs(rankdir=rankdir, label=name, labelloc='t', fontsize='14')};",
             f"  node {_attrs(fontname='Helvetica', fontsize='10')};",
             f"  edge {_attrs(color='#5F6368')};"]
    if minimal:
        lines += _minimal_body(ops)
    else:
        lines += _full_body(ops, external_inputs)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _full_body(ops: list, external_inputs: set) -> list[str]:
    lines: list[str] = []
    versions: dict[str, int] = {}     # blob name -> current version number
    node_of: dict[tuple, str] = {}   # (blob, version) -> node id
    counter = 0

    def blob_node(blob: str, version: int) -> str:
        nonlocal counter
        key = (blob, version)
        if key not in node_of:
            node_id = f"blob{counter}"
            counter += 1
            node_of[key] = node_id
            fill = INPUT_BLOB_COLOR if (version == 0 and blob in external_inputs) else BLOB_COLOR
            tip = blob if version == 0 else f"{blob} (version {version})"
            lines.append(f"  {node_id} " + _attrs(label=blob, shape="octagon", style="filled",
                                                    fillcolor=fill, tooltip=tip) + ";")
        return node_of[key]

    for index, op in enumerate(ops):
        lines.append(_op_node(index, op))
        for blob in _unique(op.input):
            source = blob_node(blob, versions.setdefault(blob, 0))
            lines.append(f"  {source} -> op{index};")
        for blob in _unique(op.control_input):
            source = blob_node(blob, versions.setdefault(blob, 0))
            lines.append(f"  {source} -> op{index} {_attrs(style='dashed')};")
        for blob in _unique(op.output):
            # A blob already seen (read or written before) gets a new version: a new node.
            versions[blob] = versions[blob] + 1 if blob in versions else 0
            target = blob_node(blob, versions[blob])
            lines.append(f"  op{index} -> {target};")
    return lines


def _minimal_body(ops: list) -> list[str]:
    lines = [_op_node(index, op) for index, op in enumerate(ops)]
    producer: dict[str, int] = {}
    seen: set[tuple[int, int]] = set()
    for index, op in enumerate(ops):
        for blob in list(op.input) + list(op.control_input):
            source = producer.get(blob)
            if source is not None and (source, index) not in seen:
                seen.add((source, index))
                lines.append(f"  op{source} -> op{index};")
        for blob in op.output:
            producer[blob] = index
    return lines


def _unique(names: Iterable[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        if name not in out:
            out.append(name)
    return out


def dot_binary() -> Optional[str]:
    """Path of Graphviz's ``dot`` executable, or None."""
    return shutil.which("dot")


def render(dot_text: str, path: str) -> str:
    """Write ``dot_text`` to ``path``: DOT text for ``.dot``/``.gv``, else rendered by Graphviz
    (``.svg``, ``.png``, ``.pdf``). Returns the format written."""
    suffix = os.path.splitext(path)[1].lower()
    fmt = RENDER_FORMATS.get(suffix)
    if fmt is None:
        raise EnforceError(f"cannot tell the drawing format from '{path}': use one of "
                           f"{', '.join(sorted(RENDER_FORMATS))}")
    if fmt == "dot":
        try:
            with open(path, "w", encoding="utf-8") as f:
                f.write(dot_text)
        except OSError as exc:
            raise EnforceError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return fmt
    exe = dot_binary()
    if exe is None:
        raise EnforceError(f"drawing .{fmt} needs Graphviz, and its 'dot' program is not on "
                           "PATH: install Graphviz (e.g. 'apt-get install graphviz') or draw to "
                           "a .dot file instead")
    try:
        proc = subprocess.run([exe, f"-T{fmt}", "-o", path], input=dot_text.encode("utf-8"),
                              capture_output=True, timeout=RENDER_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise EnforceError(f"Graphviz 'dot' took longer than {RENDER_TIMEOUT_S} s drawing "
                           f"{path}; draw to .dot or use --minimal") from exc
    except OSError as exc:
        raise EnforceError(f"cannot run Graphviz 'dot' ({exe}): {exc.strerror or exc}") from exc
    if proc.returncode != 0:
        message = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = message[0] if message else f"exit status {proc.returncode}"
        raise EnforceError(f"Graphviz 'dot' failed to draw {path}: {detail}")
    return fmt
