"""The ``c2lite`` command line: run, inspect, differentiate, convert and draw Caffe2 nets.

Subcommands::

    c2lite run NET [--init INIT] [--input NAME=FILE.npy ...] [--inputs FILE.npz]
                   [--output FILE.npz] [--iters N] [--device cpu|cuda[:ID]] [--profile]
    c2lite inspect NET [--json] [--all]
    c2lite grad NET --loss BLOB [--loss BLOB ...] [--skip N] -o OUT
    c2lite convert IN OUT [--format binary|text]
    c2lite draw NET -o FILE.svg|.png|.pdf|.dot [--rankdir LR|TB] [--minimal]
    c2lite ops [NAME]

Every failure prints one line, ``c2lite: error: ...``, to stderr and exits with status 2 (bad
usage) or 1 (anything else). ``--debug`` re-raises instead, to show the traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import zipfile
from collections import Counter
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from c2lite.errors import EnforceError

PROG = "c2lite"
ALL_HINT = "; --all lists them"
log = logging.getLogger("c2lite.cli")


# ---------------------------------------------------------------------------------------------
# errors and the parser
# ---------------------------------------------------------------------------------------------
class UsageError(Exception):
    """Bad command line: exit status 2."""


class CliError(Exception):
    """A failure with a message meant for the user as-is: exit status 1."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error raises instead of printing the usage block and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _one_line(text: str) -> str:
    parts = [line.strip() for line in str(text).splitlines() if line.strip()]
    return "; ".join(parts) if parts else "unknown error"


def _int_at_least(minimum: int, wording: str):
    """An argparse type for integers >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wording}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {wording}, got {value}")
        return value
    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _input_spec(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=FILE.npy, got {text!r}")
    return name.strip(), path.strip()


def _device_spec(text: str) -> tuple[int, int]:
    """``cpu``, ``cuda`` or ``cuda:ID`` (``gpu`` is accepted for ``cuda``) -> (type, id)."""
    kind, _, ident = text.strip().lower().partition(":")
    if kind == "cpu" and not ident:
        return (0, 0)
    if kind in ("cuda", "gpu"):
        if not ident:
            return (1, 0)
        if ident.isdigit():
            return (1, int(ident))
    raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:ID, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    # Also accepted after the subcommand; SUPPRESS keeps the top-level value when absent.
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of a failure")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log more (e.g. each legacy spelling upgraded while loading)")

    parser = _Parser(prog=PROG, description="Run, inspect and transform Caffe2 nets with c2lite.")
    parser.add_argument("--debug", action="store_true", default=False,
                        help="show the full traceback of a failure")
    parser.add_argument("-v", "--verbose", action="store_true", default=False,
                        help="log more (e.g. each legacy spelling upgraded while loading)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("run", parents=[common], help="run a net (after an optional init net)",
                       description="Run NET ITERS times, after running INIT_NET once, and "
                                   "summarize (and optionally save) its outputs.")
    p.add_argument("net", metavar="NET", help="net to run (.pb binary or .pbtxt text)")
    p.add_argument("--init", metavar="INIT_NET", help="net run once before NET (parameters)")
    p.add_argument("--input", metavar="NAME=FILE.npy", type=_input_spec, action="append",
                   default=[], help="feed blob NAME from a .npy file (repeatable)")
    p.add_argument("--inputs", metavar="FILE.npz", action="append", default=[],
                   help="feed every array of a .npz file, each under its key (repeatable)")
    p.add_argument("--output", "-o", metavar="FILE.npz",
                   help="save the outputs to a .npz file")
    p.add_argument("--iters", "-n", type=_positive_int, default=1, metavar="N",
                   help="how many times to run NET (default 1)")
    p.add_argument("--device", type=_device_spec, metavar="cpu|cuda[:ID]",
                   help="set the device_option of NET and INIT_NET (ops with their own "
                        "device_option keep it)")
    p.add_argument("--profile", action="store_true",
                   help="time every op and print a per-op-type table")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar (default: when stderr is a terminal and N > 1)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("inspect", parents=[common], help="describe a net and what c2lite can run",
                       description="Describe NET: ops by type, inputs/outputs, devices and "
                                   "engines, nested nets, legacy spellings, and which op types "
                                   "c2lite can run.")
    p.add_argument("net", metavar="NET")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--all", action="store_true", help="list every blob name in full")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("grad", parents=[common], help="add gradient operators to a net",
                       description="Append the backward pass of NET for the given loss blobs "
                                   "(core.Net.AddGradientOperators) and write the new net.")
    p.add_argument("net", metavar="NET")
    p.add_argument("--loss", "-l", action="append", required=True, metavar="BLOB",
                   help="loss blob to differentiate (repeatable)")
    p.add_argument("--skip", type=_non_negative_int, default=0, metavar="N",
                   help="ignore the first N ops (e.g. ops that only feed data)")
    p.add_argument("--output", "-o", required=True, metavar="OUT",
                   help="where to write the net: .pb binary, .pbtxt/.prototxt/.txt text")
    p.set_defaults(func=cmd_grad)

    p = sub.add_parser("convert", parents=[common], help="convert a net between binary and text",
                       description="Read IN (binary or text, upgrading legacy spellings) and "
                                   "write OUT in the format its extension names.")
    p.add_argument("src", metavar="IN")
    p.add_argument("dst", metavar="OUT")
    p.add_argument("--format", choices=("binary", "text"),
                   help="output format (default: from OUT's extension; binary if unknown)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("draw", parents=[common], help="draw a net with Graphviz",
                       description="Draw NET: ops as green boxes, blobs as octagons; every "
                                   "rewrite of a blob is a new node. .dot needs no Graphviz.")
    p.add_argument("net", metavar="NET")
    p.add_argument("--output", "-o", required=True, metavar="FILE",
                   help="FILE.svg, FILE.png, FILE.pdf or FILE.dot")
    p.add_argument("--rankdir", choices=("LR", "TB", "RL", "BT"), default="LR")
    p.add_argument("--minimal", action="store_true",
                   help="ops only, with producer -> consumer edges")
    p.set_defaults(func=cmd_draw)

    p = sub.add_parser("ops", parents=[common], help="list registered operators",
                       description="List the operators c2lite knows, or describe one.")
    p.add_argument("name", nargs="?", metavar="NAME")
    p.set_defaults(func=cmd_ops)
    return parser


def _version() -> str:
    try:
        from c2lite import __version__
        return __version__
    except Exception:  # pragma: no cover
        return "unknown"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one ``c2lite`` command; return its exit status (0, 1 runtime error, 2 usage)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in (argv[: argv.index("--")] if "--" in argv else argv)
    restore = _setup_logging("-v" in argv or "--verbose" in argv)
    try:
        args = build_parser().parse_args(argv)
        debug = bool(getattr(args, "debug", False))
        return int(args.func(args) or 0)
    except SystemExit as exc:  # --help / --version
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except UsageError as exc:
        if debug:
            raise
        _error(str(exc))
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        _error("interrupted")
        return 130
    except BrokenPipeError:
        # stdout closed early (e.g. piped into head): not an error worth a message.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        except OSError:
            pass
        return 1
    except Exception as exc:  # noqa: BLE001 - the one place every failure becomes one line
        if debug:
            raise
        _error(_describe_failure(exc))
        return 1
    finally:
        restore()


def _describe_failure(exc: BaseException) -> str:
    from c2lite.errors import EnforceError
    if isinstance(exc, (CliError, EnforceError)):
        return _one_line(str(exc))
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        return _one_line(f"{where}{exc.strerror or exc}")
    return _one_line(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for "
                     "the traceback)")


def _error(message: str) -> None:
    try:
        sys.stdout.flush()
    except Exception:  # noqa: BLE001
        pass
    print(f"{PROG}: error: {message}", file=sys.stderr)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _setup_logging(verbose: bool) -> Any:
    """Route c2lite's log records to stderr as ``c2lite: LEVEL: msg``; return an undo."""
    logger = logging.getLogger("c2lite")
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO if verbose else logging.WARNING)

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
    return restore


# ---------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------
def _check_file(path: str, what: str = "net") -> None:
    if not os.path.exists(path):
        raise CliError(f"{what} file not found: {path}")
    if os.path.isdir(path):
        raise CliError(f"{what} path is a directory, not a file: {path}")


def _check_out_dir(path: str, what: str = "output") -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CliError(f"{what} {path}: folder {folder} does not exist")
    if os.path.isdir(path):
        raise CliError(f"{what} {path} is a directory")


def _read_net(path: str, what: str = "net") -> Any:
    """``serialization.read_net(path)`` with a friendly message for a missing file."""
    from c2lite.serialization import read_net
    _check_file(path, what)
    loaded = read_net(path)
    for line in loaded.upgrades:
        log.info("%s: upgraded legacy spelling: %s", path, line)
    return loaded


def _format_of_path(path: str) -> str:
    from c2lite.serialization import TEXT_SUFFIXES
    return "text" if os.path.splitext(path)[1].lower() in TEXT_SUFFIXES else "binary"


def _nested_nets(net_def: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    """(where, NetDef) for every net stored in an op argument (If/While/...), depth first."""
    for index, op in enumerate(net_def.op):
        for arg in op.arg:
            subnets = []
            if arg.HasField("n"):
                subnets.append((f"{arg.name}", arg.n))
            subnets += [(f"{arg.name}[{k}]", n) for k, n in enumerate(arg.nets)]
            for label, sub in subnets:
                where = f"{prefix}op#{index} {op.type}.{label}"
                yield where, sub
                yield from _nested_nets(sub, where + " > ")


def _device_name(option: Any) -> str:
    from c2lite.device import DEVICE_NAMES
    kind = int(option.device_type)
    name = DEVICE_NAMES.get(kind, f"device type {kind}")
    return name if kind == 0 else f"{name}:{option.device_id}"


def _describe_option(option: Any) -> str:
    if option.ByteSize() == 0:
        return "empty device_option {} (CPU)"
    text = _device_name(option)
    extras = []
    if option.HasField("random_seed"):
        extras.append(f"random_seed {option.random_seed}")
    if option.node_name:
        extras.append(f"node_name {option.node_name!r}")
    if option.HasField("numa_node_id"):
        extras.append(f"numa_node {option.numa_node_id}")
    return text + (f" ({', '.join(extras)})" if extras else "")


def _abbrev(names: Sequence[str], limit: Optional[int] = 12, hint: str = "") -> str:
    names = list(names)
    if not names:
        return "(none)"
    if limit is None or len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", ... (+{len(names) - limit} more{hint})"


# ---------------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------------
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def _sniff(path: str, where: str) -> bytes:
    if not os.path.exists(path):
        raise CliError(f"{where}: file not found")
    if os.path.isdir(path):
        raise CliError(f"{where}: is a directory, not a file")
    try:
        with open(path, "rb") as f:
            return f.read(6)
    except OSError as exc:
        raise CliError(f"{where}: cannot read the file ({exc.strerror or exc})") from exc


def _pickle_refusal(where: str, what: str = "the file holds a pickled object array") -> CliError:
    return CliError(f"{where}: {what}, which c2lite never loads (allow_pickle=False); save "
                    "plain numeric or string arrays instead")


def _load_npy(name: str, path: str) -> np.ndarray:
    where = f"--input {name}={path}"
    head = _sniff(path, where)
    if head.startswith(_ZIP_MAGIC):
        raise CliError(f"{where}: this is a .npz archive; pass it with --inputs FILE.npz")
    if not head.startswith(_NPY_MAGIC):
        raise CliError(f"{where}: not a .npy file (no NumPy header)")
    try:
        value = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise _pickle_refusal(where) from exc
        raise CliError(f"{where}: not a readable .npy file ({_one_line(str(exc))})") from exc
    except (OSError, EOFError) as exc:
        raise CliError(f"{where}: not a readable .npy file "
                       f"({_one_line(str(exc)) or type(exc).__name__})") from exc
    return value


def _load_npz(path: str) -> dict[str, np.ndarray]:
    """--inputs archive through the safe loader (never unpickles; sizes checked first)."""
    from c2lite.serialization import load_npz
    where = f"--inputs {path}"
    head = _sniff(path, where)
    if head.startswith(_NPY_MAGIC):
        raise CliError(f"{where}: this is a single .npy array; pass it with --input "
                       "NAME=FILE.npy")
    try:
        return load_npz(path)
    except EnforceError as exc:
        raise CliError(f"{where}: {exc.condition}") from exc


def _collect_inputs(specs: Sequence[tuple[str, str]], npz_paths: Sequence[str]) -> dict:
    feeds: dict[str, np.ndarray] = {}
    for path in npz_paths:
        feeds.update(_load_npz(path))
    for name, path in specs:
        feeds[name] = _load_npy(name, path)
    return feeds


def _needed_inputs(net_def: Any) -> list[str]:
    """Blobs the net reads before any of its ops writes them (declared inputs first)."""
    written: set[str] = set()
    needed: list[str] = list(net_def.external_input)
    seen = set(needed)
    for op in net_def.op:
        for blob in list(op.input) + list(op.control_input):
            if blob not in written and blob not in seen:
                needed.append(blob)
                seen.add(blob)
        written.update(op.output)
    return needed


class _SimpleBar:
    """A small stderr progress bar for when tqdm is not installed."""

    def __init__(self, total: int, desc: str, stream: Any) -> None:
        self.total, self.desc, self.stream = total, desc, stream
        self.count = 0
        self.start = self._last = time.perf_counter()
        self._draw()

    def update(self, n: int = 1) -> None:
        self.count += n
        now = time.perf_counter()
        if now - self._last >= 0.1 or self.count >= self.total:
            self._last = now
            self._draw()

    def _draw(self) -> None:
        width = 30
        done = int(width * self.count / self.total) if self.total else width
        elapsed = time.perf_counter() - self.start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        self.stream.write(f"\r{self.desc}: [{'#' * done}{'.' * (width - done)}] "
                          f"{self.count}/{self.total} {rate:.1f} it/s")
        self.stream.flush()

    def close(self) -> None:
        self._draw()
        self.stream.write("\n")
        self.stream.flush()


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, enabled: Optional[bool] = None) -> Any:
    """tqdm if importable, else a plain stderr bar; ``enabled=None`` shows it only on a TTY."""
    stream = sys.stderr
    if enabled is None:
        enabled = total > 1 and hasattr(stream, "isatty") and stream.isatty()
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _SimpleBar(total, desc, stream)
    return tqdm(total=total, desc=desc, file=stream, unit="it", dynamic_ncols=True)


class _Profile:
    """Per-op-type wall time of a created net's operators, run one by one in order."""

    def __init__(self, net: Any) -> None:
        self.net = net
        self.calls: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()

    def run(self) -> None:
        from c2lite.errors import EnforceError
        clock = time.perf_counter
        for index, op in enumerate(self.net.ops):
            start = clock()
            try:
                op.run()
            except Exception as exc:  # noqa: BLE001 - same op context as the nets add
                if not isinstance(exc, EnforceError):
                    wrapped = EnforceError(f"{type(exc).__name__}: {exc}")
                    wrapped.__cause__ = exc
                    exc = wrapped
                raise exc.with_op(index, op.type, op.name, self.net.name)
            self.seconds[op.type] += clock() - start
            self.calls[op.type] += 1

    def table(self) -> str:
        total = sum(self.seconds.values()) or 1e-12
        rows = sorted(self.seconds, key=lambda t: -self.seconds[t])
        width = max([len("op type")] + [len(t) for t in rows])
        lines = [f"{'op type':<{width}}  {'calls':>8}  {'total ms':>10}  {'ms/call':>9}  "
                 f"{'share %':>7}"]
        for op_type in rows:
            ms = self.seconds[op_type] * 1e3
            calls = self.calls[op_type]
            lines.append(f"{op_type:<{width}}  {calls:>8}  {ms:>10.3f}  {ms / calls:>9.4f}  "
                         f"{100 * self.seconds[op_type] / total:>7.1f}")
        lines.append(f"{'total':<{width}}  {sum(self.calls.values()):>8}  "
                     f"{total * 1e3:>10.3f}  {'':>9}  {100.0:>7.1f}")
        return "\n".join(lines)


def _stats(value: Any) -> tuple[str, str, str]:
    """(shape, dtype, min/mean/max text) of one fetched blob."""
    if isinstance(value, (str, bytes)):
        unit = "chars" if isinstance(value, str) else "bytes"
        return "-", type(value).__name__, f"{len(value)} {unit}"
    arr = np.asarray(value)
    shape = "(" + ", ".join(str(d) for d in arr.shape) + ("," if arr.ndim == 1 else "") + ")"
    if arr.size == 0:
        return shape, str(arr.dtype), "empty"
    if arr.dtype.kind == "b":
        return shape, str(arr.dtype), f"{int(arr.sum())} true of {arr.size}"
    if arr.dtype.kind not in "iuf":
        return shape, str(arr.dtype), "-"
    data = arr.astype(np.float64, copy=False)
    finite = np.isfinite(data)
    note = ""
    if not finite.all():
        note = f"  ({int((~finite).sum())} non-finite)"
        data = data[finite]
        if data.size == 0:
            return shape, str(arr.dtype), "all non-finite"
    return (shape, str(arr.dtype),
            f"min {data.min():.6g}  mean {data.mean():.6g}  max {data.max():.6g}{note}")


def _savable(value: Any) -> Optional[np.ndarray]:
    """The value as an array np.save can write without pickling, or None."""
    if isinstance(value, bytes):
        return np.frombuffer(value, dtype=np.uint8).copy()
    arr = np.asarray(value)
    if arr.dtype.kind != "O":
        return arr
    items = arr.ravel().tolist()
    if all(isinstance(i, str) for i in items):
        return np.array(items, dtype=str).reshape(arr.shape)
    if all(isinstance(i, bytes) for i in items):
        return np.array(items, dtype=bytes).reshape(arr.shape)
    return None


def save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Write a .npz like ``np.savez`` but never pickling, and with any blob name as the key."""
    _check_out_dir(path, "--output")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, arr in arrays.items():
            with zf.open(key + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(arr), allow_pickle=False)


def cmd_run(args: argparse.Namespace) -> int:
    from c2lite.proto import caffe2_pb2
    from c2lite.workspace import Workspace

    loaded = _read_net(args.net)
    net_def = loaded.proto
    if not net_def.name:
        net_def.name = os.path.splitext(os.path.basename(args.net))[0] or "net"
    init_def = _read_net(args.init, "init net").proto if args.init else None
    feeds = _collect_inputs(args.input, args.inputs)

    if args.output:
        _check_out_dir(args.output, "--output")
    option = None
    if args.device is not None:
        option = caffe2_pb2.DeviceOption()
        option.device_type, option.device_id = args.device
        for target in (net_def, init_def):
            if target is None:
                continue
            target.device_option.CopyFrom(option)
            own = sum(1 for op in target.op if op.HasField("device_option"))
            if own:
                log.warning("%d op(s) of net '%s' set their own device_option and keep it "
                            "(--device sets the net's)", own, target.name or "init")

    ws = Workspace("c2lite-run")
    if init_def is not None:
        if not init_def.name:
            init_def.name = "init"
        init_needs = _needed_inputs(init_def)
        missing = [b for b in init_needs if b not in feeds]
        if missing:
            raise CliError(f"init net '{init_def.name}' reads blob(s) that nothing provides: "
                           f"{_abbrev(missing, 8)}; feed them with --input/--inputs")
        for name in init_needs:
            ws.feed_blob(name, feeds[name], option)
        ws.run_net_once(init_def)
    # Fed after the init net, so a fed blob replaces anything the init net wrote under its name.
    for name, arr in feeds.items():
        ws.feed_blob(name, arr, option)
    missing = [b for b in _needed_inputs(net_def) if not ws.has_blob(b)]
    if missing:
        hint = "feed them with --input NAME=FILE.npy or --inputs FILE.npz"
        if init_def is None:
            hint += ", or create parameters with --init INIT_NET"
        raise CliError(f"net '{net_def.name}' needs input blob(s) that were not provided: "
                       f"{_abbrev(missing, 8)}; {hint}")
    unused = sorted(set(feeds) - set(_needed_inputs(net_def))
                    - set(_needed_inputs(init_def) if init_def is not None else ()))
    if unused:
        log.warning("fed blob(s) the net never reads: %s", ", ".join(unused))

    net = ws.create_net(net_def)
    profile = _Profile(net) if args.profile else None
    step = profile.run if profile is not None else net.run
    bar = progress_bar(args.iters, f"run {net_def.name}", args.progress)
    start = time.perf_counter()
    try:
        for _ in range(args.iters):
            step()
            bar.update(1)
    finally:
        bar.close()
    elapsed = time.perf_counter() - start

    print(f"ran net '{net_def.name}' ({len(net_def.op)} ops) {args.iters} time"
          f"{'' if args.iters == 1 else 's'} in {elapsed:.3f} s "
          f"({1e3 * elapsed / args.iters:.3f} ms per run)")
    if profile is not None:
        print("profile (ops run one by one, in net order):")
        print(profile.table())

    names = list(net_def.external_output)
    source = "external outputs"
    if not names:
        source = "blobs written by the net (no external outputs declared)"
        for op in net_def.op:
            for blob in op.output:
                if blob not in names:
                    names.append(blob)
    rows, saved = [], {}
    for name in names:
        value = ws.fetch_blob(name)
        rows.append((name,) + _stats(value))
        if args.output:
            arr = _savable(value)
            if arr is None:
                log.warning("blob '%s' holds Python objects and is not saved (no pickles)", name)
            else:
                saved[name] = arr
    _print_outputs(rows, source)
    if args.output:
        save_npz(args.output, saved)
        print(f"saved {len(saved)} blob{'' if len(saved) == 1 else 's'} to {args.output}")
    return 0


def _print_outputs(rows: list[tuple[str, str, str, str]], source: str, limit: int = 25) -> None:
    print(f"{len(rows)} output{'' if len(rows) == 1 else 's'} ({source}):")
    if not rows:
        return
    shown = rows[:limit]
    w_name = max(len(r[0]) for r in shown)
    w_shape = max(len(r[1]) for r in shown)
    w_dtype = max(len(r[2]) for r in shown)
    for name, shape, dtype, stats in shown:
        print(f"  {name:<{w_name}}  {shape:<{w_shape}}  {dtype:<{w_dtype}}  {stats}")
    if len(rows) > limit:
        print(f"  ... {len(rows) - limit} more (all of them go to --output)")


# ---------------------------------------------------------------------------------------------
# inspect
# ---------------------------------------------------------------------------------------------
def _device_key(option: Any) -> tuple[int, int]:
    kind = int(option.device_type) if option is not None else 0
    return (kind, int(option.device_id) if kind else 0)


def analyze_net(loaded: Any) -> dict:
    """Everything ``c2lite inspect`` reports, as plain data."""
    from c2lite.device import DEVICE_NAMES
    from c2lite.draw import is_gradient_op
    from c2lite.registry import engines_of, has_implementation, nearest_names, \
        registered_operators
    from c2lite.schema import get_schema, schemas

    net = loaded.proto
    nested = list(_nested_nets(net))
    top_types = Counter(op.type for op in net.op)
    # every op of the file, with the device it asks for (own option, else its net's)
    placed: list[tuple[Any, tuple[int, int]]] = []
    net_option = net.device_option if net.HasField("device_option") else None

    def place(ops: Iterable[Any], default: Optional[Any]) -> None:
        for op in ops:
            option = op.device_option if op.HasField("device_option") else default
            placed.append((op, _device_key(option)))

    place(net.op, net_option)
    for _, sub in nested:
        place(sub.op, sub.device_option if sub.HasField("device_option") else net_option)

    op_options = Counter(_describe_option(op.device_option) for op, _ in placed
                         if op.HasField("device_option"))
    engines = Counter(op.engine for op, _ in placed if op.engine)

    def dev_name(key: tuple[int, int]) -> str:
        name = DEVICE_NAMES.get(key[0], f"device type {key[0]}")
        return name if key[0] == 0 else f"{name}:{key[1]}"

    requested: dict[str, set] = {}
    for op, key in placed:
        requested.setdefault(op.type, set()).add(key)
    kernel_types = {k for k in registered_operators() if "_ENGINE_" not in k}
    known = kernel_types | set(schemas())
    types = {}
    for op_type in sorted(requested):
        cpu = has_implementation(op_type, 0)
        cuda = has_implementation(op_type, 1)
        wanted = sorted(requested[op_type])
        runnable = all((k[0] == 0 and cpu) or (k[0] == 1 and cuda) for k in wanted)
        entry = {
            "cpu": cpu, "cuda": cuda, "schema": get_schema(op_type) is not None,
            "requested": [dev_name(k) for k in wanted], "runnable_as_requested": runnable,
            "engines": {"CPU": [e for e in engines_of(op_type, 0) if e],
                        "CUDA": [e for e in engines_of(op_type, 1) if e]},
        }
        if not cpu and not cuda:
            entry["nearest"] = nearest_names(op_type, known - {op_type})
        types[op_type] = entry

    ext_in = list(net.external_input)
    return {
        "path": loaded.path, "format": loaded.format, "upgrades": list(loaded.upgrades),
        "bytes": os.path.getsize(loaded.path) if loaded.path else None,
        "name": net.name, "type": net.type or "", "num_workers": net.num_workers or None,
        "ops": len(net.op),
        "gradient_ops": sum(1 for op in net.op if is_gradient_op(op)),
        "gradient_ops_marked": sum(1 for op in net.op if op.is_gradient_op),
        "op_types": dict(sorted(top_types.items(), key=lambda kv: (-kv[1], kv[0]))),
        "nested_nets": [{"where": where, "name": sub.name, "ops": len(sub.op),
                         "op_types": dict(Counter(op.type for op in sub.op))}
                        for where, sub in nested],
        "external_inputs": ext_in, "external_outputs": list(net.external_output),
        "net_device_option": _describe_option(net.device_option)
        if net.HasField("device_option") else None,
        "op_device_options": dict(op_options),
        "ops_without_device_option": sum(1 for op, _ in placed
                                         if not op.HasField("device_option")),
        "engines": dict(engines),
        "op_type_support": types,
        "runnable": all(t["runnable_as_requested"] for t in types.values()),
    }


def cmd_inspect(args: argparse.Namespace) -> int:
    report = analyze_net(_read_net(args.net))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    limit = None if args.all else 12
    r = report
    kind = r["type"] or "simple (type unset)"
    print(f"net:        {r['name'] or '(unnamed)'}")
    print(f"file:       {r['path']} ({r['format']}, {r['bytes']} bytes)")
    print(f"type:       {kind}" + (f", num_workers {r['num_workers']}" if r["num_workers"] else ""))
    if r["upgrades"]:
        print(f"legacy:     {len(r['upgrades'])} legacy spelling(s) upgraded while loading:")
        for line in r["upgrades"]:
            print(f"              {line}")
    else:
        print("legacy:     none (parses with the current caffe2.proto as written)")
    grad = ""
    if r["gradient_ops"]:
        marked = r["gradient_ops_marked"]
        grad = (f", {r['gradient_ops']} gradient ops ("
                + (f"{marked} marked is_gradient_op)" if marked else "by type name; none marked "
                   "is_gradient_op)"))
    print(f"ops:        {r['ops']} in {len(r['op_types'])} types{grad}")
    width = max([len(t) for t in r["op_types"]] + [4])
    for op_type, count in r["op_types"].items():
        print(f"  {op_type:<{width}}  {count}")
    if r["nested_nets"]:
        total = sum(n["ops"] for n in r["nested_nets"])
        print(f"nested:     {len(r['nested_nets'])} net(s) inside op arguments, {total} ops:")
        for n in r["nested_nets"]:
            kinds = ", ".join(f"{t} x{c}" for t, c in sorted(n["op_types"].items()))
            print(f"  {n['where']}: net '{n['name']}', {n['ops']} ops ({kinds or 'empty'})")
    for label, key in (("inputs:    ", "external_inputs"), ("outputs:   ", "external_outputs")):
        print(f"{label} {len(r[key])}: {_abbrev(r[key], limit, ALL_HINT)}")
    print(f"device:     net {r['net_device_option'] or 'not set (CPU)'}")
    for text, count in sorted(r["op_device_options"].items(), key=lambda kv: -kv[1]):
        print(f"            {count} op(s) set {text}")
    if r["op_device_options"]:
        print(f"            {r['ops_without_device_option']} op(s) follow the net's")
    if r["engines"]:
        print("engines:    " + ", ".join(f"{e} ({c} ops)" for e, c in
                                          sorted(r["engines"].items(), key=lambda kv: -kv[1])))
    else:
        print("engines:    default only")

    support = r["op_type_support"]
    both = [t for t, s in support.items() if s["cpu"] and s["cuda"]]
    cpu_only = [t for t, s in support.items() if s["cpu"] and not s["cuda"]]
    cuda_only = [t for t, s in support.items() if s["cuda"] and not s["cpu"]]
    missing = [t for t, s in support.items() if not s["cpu"] and not s["cuda"]]
    print(f"c2lite:     {len(support) - len(missing)} of {len(support)} op types have a kernel")
    print(f"  CPU and CUDA: {_abbrev(both, None)}")
    print(f"  CPU only:     {_abbrev(cpu_only, None)}")
    if cuda_only:
        print(f"  CUDA only:    {_abbrev(cuda_only, None)}")
    if missing:
        print(f"  no kernel:    {len(missing)} op type(s)")
        for op_type in missing:
            s = support[op_type]
            why = "schema known, no kernel" if s["schema"] else "unknown operator"
            near = f"; nearest: {', '.join(s['nearest'])}" if s.get("nearest") else ""
            print(f"    {op_type} ({why}{near})")
    blocked = [t for t, s in support.items() if not s["runnable_as_requested"]]
    if not blocked:
        print("verdict:    c2lite can run every op of this net on the device it asks for")
    else:
        details = []
        for op_type in blocked:
            asked = "/".join(support[op_type]["requested"])
            details.append(f"{op_type} on {asked}")
        print(f"verdict:    c2lite cannot run {len(blocked)} of {len(support)} op types as "
              f"placed: {_abbrev(details, limit, ALL_HINT)}")
    return 0


# ---------------------------------------------------------------------------------------------
# grad / convert / draw / ops
# ---------------------------------------------------------------------------------------------
def cmd_grad(args: argparse.Namespace) -> int:
    from c2lite.serialization import save_net
    loaded = _read_net(args.net)
    _check_out_dir(args.output, "-o")
    proto = loaded.proto
    if args.skip > len(proto.op):
        raise UsageError(f"--skip {args.skip} is more than the net's {len(proto.op)} ops")
    produced = {blob for op in proto.op[args.skip:] for blob in op.output}
    for loss in args.loss:
        if loss not in produced:
            raise CliError(f"loss blob '{loss}' is not an output of any op of net "
                           f"'{proto.name}'" + (f" after the first {args.skip}" if args.skip
                                                else ""))
    from c2lite import core
    net = core.Net(proto)
    before = len(net.Proto().op)
    grad_map = net.AddGradientOperators(list(args.loss), skip=args.skip)
    out = net.Proto()
    out.name = proto.name  # core.Net makes names process-unique; keep the file's
    added = len(out.op) - before
    save_net(out, args.output)
    pairs = []
    for blob, grad in grad_map.items():
        if hasattr(grad, "indices") and hasattr(grad, "values"):
            grad = f"({grad.indices}, {grad.values})"
        pairs.append(f"{blob} -> {grad}")
    losses = set(args.loss)
    produced_grads = [p for p in pairs if p.split(" -> ")[0] not in losses]
    print(f"grad: added {added} gradient op{'' if added == 1 else 's'} to net '{out.name}' "
          f"({before} -> {len(out.op)} ops) for loss {', '.join(args.loss)}; "
          f"{len(produced_grads)} gradient{'' if len(produced_grads) == 1 else 's'}: "
          f"{_abbrev(produced_grads, 8)}; wrote {args.output} ({_format_of_path(args.output)})")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from c2lite.serialization import save_net
    loaded = _read_net(args.src, "input")
    _check_out_dir(args.dst, "OUT")
    fmt = args.format or _format_of_path(args.dst)
    save_net(loaded.proto, args.dst, format=fmt)
    size = os.path.getsize(args.dst)
    upgrades = loaded.upgrades
    note = (f"; upgraded {len(upgrades)} legacy spelling(s)" if upgrades
            else "; no legacy spellings")
    print(f"converted {args.src} ({loaded.format}) -> {args.dst} ({fmt}, {size} bytes): net "
          f"'{loaded.proto.name}', {len(loaded.proto.op)} ops{note}")
    for line in upgrades:
        print(f"  upgraded: {line}")
    return 0


def cmd_draw(args: argparse.Namespace) -> int:
    from c2lite.draw import net_to_dot, render
    loaded = _read_net(args.net)
    _check_out_dir(args.output, "-o")
    dot_text = net_to_dot(loaded.proto, rankdir=args.rankdir, minimal=args.minimal)
    fmt = render(dot_text, args.output)
    nested = list(_nested_nets(loaded.proto))
    note = (f"; {len(nested)} net(s) nested in op arguments are not drawn" if nested else "")
    print(f"drew net '{loaded.proto.name}' ({len(loaded.proto.op)} ops"
          f"{', minimal' if args.minimal else ''}) to {args.output} ({fmt}){note}")
    return 0


def _op_types() -> list[str]:
    from c2lite.registry import registered_operators
    from c2lite.schema import schemas
    kernels = {k for k in registered_operators() if "_ENGINE_" not in k}
    engined = {k.split("_ENGINE_")[0] for k in registered_operators() if "_ENGINE_" in k}
    return sorted(kernels | engined | set(schemas()))


def _op_devices(op_type: str) -> tuple[list[str], list[str]]:
    from c2lite.registry import engines_of
    devices, engines = [], []
    for code, name in ((0, "CPU"), (1, "CUDA")):
        found = engines_of(op_type, code)
        if found:
            devices.append(name)
            engines += [f"{e}({name})" for e in found if e]
    return devices, engines


def _count_range(lo: int, hi: int) -> str:
    from c2lite.schema import INT_MAX
    if hi == INT_MAX:
        return f"{lo}+"
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _gradient_note(op_type: str) -> Optional[str]:
    """What c2lite.gradient says about ``op_type``'s gradient (None if it is unavailable)."""
    try:
        from c2lite import gradient
    except ImportError:
        return None
    maker = gradient.gradient_maker(op_type)
    if maker is None:
        return "no gradient maker registered"
    special = {"NoGradient": "none (NO_GRADIENT: the backward pass stops here)",
               "ThrowInTheTowelIfGradientIsCalled": "none (SHOULD_NOT_DO_GRADIENT)",
               "GradientNotImplementedYet": "not implemented yet"}
    name = getattr(maker, "__name__", type(maker).__name__)
    return special.get(name, f"registered ({name})")


def cmd_ops(args: argparse.Namespace) -> int:
    from c2lite.registry import nearest_names
    from c2lite.schema import get_schema
    names = _op_types()
    if args.name:
        name = args.name
        if name not in names:
            folded = [n for n in names if n.lower() == name.lower()]
            near = folded or nearest_names(name, names)
            hint = f"; did you mean: {', '.join(near)}?" if near else ""
            raise CliError(f"unknown operator '{name}' ({len(names)} registered; "
                           f"'c2lite ops' lists them){hint}")
        schema = get_schema(name)
        devices, engines = _op_devices(name)
        if schema is not None:
            print(schema.describe())
            doc_lines = schema.doc.splitlines()
            if len(doc_lines) > 1:
                print()
                for line in doc_lines:
                    print(f"  {line}")
        else:
            print(f"{name}: no schema (inputs and outputs are not checked)")
        print(f"devices: {', '.join(devices) if devices else 'none (schema only, no kernel)'}")
        print(f"engines: {', '.join(engines) if engines else 'default only'}")
        grad = _gradient_note(name)
        if grad is not None:
            print(f"gradient: {grad}")
        return 0
    rows = []
    for name in names:
        schema = get_schema(name)
        devices, engines = _op_devices(name)
        ins = _count_range(schema.min_input, schema.max_input) if schema else "?"
        outs = _count_range(schema.min_output, schema.max_output) if schema else "?"
        doc = schema.doc.splitlines()[0] if schema is not None and schema.doc else ""
        if schema is not None and schema.private:
            doc = "(private) " + doc
        rows.append((name, "/".join(devices) or "-", ",".join(engines) or "-", ins, outs, doc))
    head = ("OPERATOR", "DEVICES", "ENGINES", "IN", "OUT", "DOC")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(5)]
    print(f"{len(rows)} operators ({sum(1 for r in rows if r[1] != '-')} with a kernel)")
    for row in [head] + rows:
        doc = row[5] if len(row[5]) <= 70 else row[5][:67] + "..."
        print("  ".join(f"{row[i]:<{widths[i]}}" for i in range(5)) + "  " + doc)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
