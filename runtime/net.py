"""Nets: build every operator of a NetDef once, then run them (reference §2.7).

``simple`` runs ops in order on the calling thread. ``dag`` runs independent ops concurrently on
a thread pool, ordered by read-after-write (inputs and control_input), write-after-write and
write-after-read dependencies. Legacy executor names map onto these two.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import threading
from typing import Any, Callable, Optional

from c2lite.errors import EnforceError
from c2lite.registry import create_operator


def _fail(exc: BaseException, index: Optional[int], op: Any, net: str = "") -> EnforceError:
    """``exc`` as an EnforceError carrying the op's context (foreign errors are wrapped)."""
    if not isinstance(exc, EnforceError):
        wrapped = EnforceError(f"{type(exc).__name__}: {exc}")
        wrapped.__cause__ = exc
        exc = wrapped
    return exc.with_op(index, op.type, op.name, net)


class NetBase:
    """Checks a NetDef and creates its operators (inputs must exist; outputs are created)."""

    def __init__(self, net_def: Any, ws: Any) -> None:
        self.net_def = net_def
        self.name: str = net_def.name
        self.ws = ws
        self._check_external_blobs(net_def)
        net_option = net_def.device_option if net_def.HasField("device_option") else None
        self.ops = []
        for index, op_def in enumerate(net_def.op):
            if op_def.HasField("device_option") and op_def.device_option.node_name:
                raise EnforceError("node_name must be empty for all operators at execution "
                                   f"time (got '{op_def.device_option.node_name}')").with_op(
                                       index, op_def.type, op_def.name, self.name)
            try:
                self.ops.append(create_operator(op_def, ws, net_option))
            except Exception as exc:  # noqa: BLE001 - every failure gets op context
                raise _fail(exc, index, op_def, self.name)
        self._run_lock = threading.Lock()

    def _check_external_blobs(self, net_def: Any) -> None:
        known = set(net_def.external_input)
        if known:
            for index, op_def in enumerate(net_def.op):
                for blob in op_def.input:
                    if blob not in known:
                        raise EnforceError(
                            f"op {op_def.type}: Source for input {blob} is unknown for net "
                            f"{net_def.name}, operator {index}", blob=blob).with_op(
                                index, op_def.type, op_def.name, net_def.name)
                known.update(op_def.output)
        produced = set(net_def.external_input)
        for op_def in net_def.op:
            produced.update(op_def.output)
        for blob in net_def.external_output:
            if blob not in produced:
                raise EnforceError("Some of the blobs are declared as output but never produced "
                                   f"by the net {net_def.name}, the first one is {blob}",
                                   blob=blob)

    def run(self) -> bool:
        """Run every op once; two threads running one net are serialized, never interleaved."""
        with self._run_lock:
            self._run()
        return True

    def _run(self) -> None:
        raise NotImplementedError

    def Proto(self) -> Any:
        return self.net_def


class SimpleNet(NetBase):
    """Ops run strictly in NetDef order; the first failure stops the run."""

    def _run(self) -> None:
        for index, op in enumerate(self.ops):
            try:
                op.run()
            except Exception as exc:  # noqa: BLE001
                raise _fail(exc, index, op, self.name)


_POOL_THREADS = 64
_shared_pool: Optional[cf.ThreadPoolExecutor] = None
_pool_lock = threading.Lock()


def _pool() -> cf.ThreadPoolExecutor:
    """One process-wide pool for dag ops; it starts threads only as they are needed, and each
    net caps its own in-flight ops at num_workers."""
    global _shared_pool
    with _pool_lock:
        if _shared_pool is None:
            _shared_pool = cf.ThreadPoolExecutor(max_workers=_POOL_THREADS,
                                                 thread_name_prefix="c2lite-dag")
        return _shared_pool


def dependencies(net_def: Any) -> list[set[int]]:
    """For each op, the earlier ops it must wait for (RAW incl. control_input, WAW, WAR)."""
    last_writer: dict[str, int] = {}
    readers: dict[str, list[int]] = {}
    deps: list[set[int]] = []
    for index, op_def in enumerate(net_def.op):
        mine: set[int] = set()
        for blob in list(op_def.input) + list(op_def.control_input):
            if blob in last_writer:
                mine.add(last_writer[blob])
        for blob in op_def.output:
            if blob in last_writer:
                mine.add(last_writer[blob])
            mine.update(readers.get(blob, ()))
        mine.discard(index)
        deps.append(mine)
        for blob in op_def.input:
            readers.setdefault(blob, []).append(index)
        for blob in op_def.output:
            last_writer[blob] = index
            readers[blob] = []
    return deps


class DAGNet(SimpleNet):
    """Independent ops run concurrently; after a failure no new op starts, in-flight ones
    finish, and the first error is raised."""

    def __init__(self, net_def: Any, ws: Any) -> None:
        super().__init__(net_def, ws)
        workers = net_def.num_workers
        for arg in net_def.arg:
            if arg.name == "num_workers" and arg.HasField("i"):
                workers = arg.i
        self.num_workers = max(1, workers or min(4, os.cpu_count() or 1))
        self.deps = dependencies(net_def)
        self.children: list[list[int]] = [[] for _ in self.ops]
        for index, deps in enumerate(self.deps):
            for parent in deps:
                self.children[parent].append(index)

    def _run(self) -> None:
        if self.num_workers == 1 or len(self.ops) <= 1:
            return super()._run()
        pool = _pool()
        waiting = [len(d) for d in self.deps]
        ready = [i for i, n in enumerate(waiting) if n == 0]
        running: dict[cf.Future, int] = {}
        error: Optional[BaseException] = None
        while ready or running:
            while ready and error is None and len(running) < self.num_workers:
                index = ready.pop(0)
                running[pool.submit(self.ops[index].run)] = index
            if not running:
                break
            done, _ = cf.wait(running, timeout=0.1, return_when=cf.FIRST_COMPLETED)
            for future in done:
                index = running.pop(future)
                exc = future.exception()
                if exc is not None:
                    if error is None:
                        error = _fail(exc, index, self.ops[index], self.name)
                    continue
                for child in self.children[index]:
                    waiting[child] -= 1
                    if waiting[child] == 0:
                        ready.append(child)
            if error is not None:
                ready.clear()
        if error is not None:
            raise error


#: Executor names (2018 and late Caffe2) mapped onto c2lite's two executors.
NET_TYPES: dict[str, Callable[[Any, Any], NetBase]] = {
    "simple": SimpleNet, "async_simple": SimpleNet, "rnn": SimpleNet,
    "singlethread_async": SimpleNet,
    "dag": DAGNet, "prof_dag": DAGNet, "async_dag": DAGNet, "async_polling": DAGNet,
    "async_scheduling": DAGNet, "parallel": DAGNet,
}


def create_net(net_def: Any, ws: Any) -> NetBase:
    """Build the executor named by ``net_def.type`` (unset or empty means simple)."""
    kind = net_def.type or "simple"
    factory = NET_TYPES.get(kind)
    if factory is None:
        raise EnforceError(f"Could not create net: unknown net type '{kind}' for net "
                           f"'{net_def.name}'. Known types: {', '.join(sorted(NET_TYPES))}")
    return factory(net_def, ws)


def run_single_operator(op_def: Any, ws: Any) -> None:
    """Create and run one op with its own device option (RunOperatorOnce)."""
    try:
        op = create_operator(op_def, ws)
        op.run()
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc, None, op_def)
