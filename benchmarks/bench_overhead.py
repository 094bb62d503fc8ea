"""Runtime overhead: what c2lite adds around tiny kernels.

Prints, in one run:
- a created net of 100 Copy ops on 4-element blobs: microseconds per op, minus the bare kernel
  (``ndarray.copy`` called directly) = the runtime's own overhead (bar: <= 20 us/op);
- RunOperatorOnce of one tiny op, construction included (bar: <= 100 us).
"""
from __future__ import annotations

import time

import numpy as np

from c2lite import Workspace, core


def best_of(fn, repeat: int = 7, number: int = 50) -> float:
    """Best mean seconds per call over ``repeat`` batches of ``number`` calls."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def main() -> None:
    n_ops = 100
    ws = Workspace("overhead")
    ws.feed_blob("b0", np.ones(4, dtype=np.float32))
    net = core.Net("copy_chain")
    for i in range(n_ops):
        net.Copy([f"b{i}"], [f"b{i + 1}"])
    ws.create_net(net)
    net_s = best_of(lambda: ws.run_net(net.Name()))
    x = np.ones(4, dtype=np.float32)
    kernel_s = best_of(lambda: [x.copy() for _ in range(n_ops)])
    per_op_us = (net_s - kernel_s) / n_ops * 1e6

    op = core.CreateOperator("Copy", ["b0"], ["single"])
    once_us = best_of(lambda: ws.run_operator_once(op), number=200) * 1e6

    rows = [("net of 100 Copy ops: overhead per op", per_op_us, 20.0),
            ("RunOperatorOnce of one Copy", once_us, 100.0)]
    print(f"{'measure':44s} {'us':>8s} {'bar us':>8s}  result")
    for name, value, bar in rows:
        print(f"{name:44s} {value:8.2f} {bar:8.1f}  {'PASS' if value <= bar else 'FAIL'}")
    print(f"(whole net run: {net_s * 1e6:.1f} us; bare kernels: {kernel_s * 1e6:.1f} us)")


if __name__ == "__main__":
    main()
