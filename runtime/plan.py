"""Plans: PlanDef/ExecutionStep trees of nets run with iteration and stop blobs (§2.8).

Nets are created lazily, by name, the first time a step uses them (overwriting a same-named
net once) and then reused, so stateful nets keep their state across steps.
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
from typing import Any, Optional

import numpy as np

from c2lite.errors import EnforceError

log = logging.getLogger("c2lite.plan")


class _Cancelled(EnforceError):
    """A concurrent sibling failed, so this step stopped before its next iteration."""

    def __init__(self, step: str) -> None:
        super().__init__(f"ExecutionStep {step} stopped because a concurrent step failed")


class _PlanRun:
    """State of one RunPlan call: the plan's net defs and the nets created so far."""

    def __init__(self, plan: Any, ws: Any) -> None:
        self.defs: dict[str, Any] = {}
        for net_def in plan.network:
            if net_def.name in self.defs:
                raise EnforceError("Your plan contains networks of the same name "
                                   f"\"{net_def.name}\", which should not happen. Check your "
                                   "plan to see if you made a programming error in creating "
                                   "the plan.")
            self.defs[net_def.name] = net_def
        self.ws = ws
        self.created: dict[tuple[int, str], Any] = {}
        self.lock = threading.Lock()
        #: Set when a concurrent substep fails: its siblings stop before their next iteration.
        self.failed = threading.Event()

    def net(self, ws: Any, step_name: str, name: str) -> Any:
        key = (id(ws), name)
        with self.lock:
            net = self.created.get(key)
            if net is None:
                net_def = self.defs.get(name)
                if net_def is None:
                    raise EnforceError(f"ExecutionStep {step_name} uses undefined net {name}")
                net = self.created[key] = ws.create_net(net_def, overwrite=True)
        return net

    def run_step(self, step: Any, ws: Any) -> None:
        if step.substep and step.network:
            raise EnforceError(f"ExecutionStep {step.name} should either have substeps or "
                               "networks but not both")
        if step.HasField("num_iter") and step.HasField("should_stop_blob"):
            raise EnforceError(f"ExecutionStep {step.name}: must not specify num_iter if "
                               "should_stop_blob is set")
        if step.create_workspace:
            from c2lite.workspace import Workspace
            ws = Workspace(f"{ws.name}/{step.name}", parent=ws)
        if step.should_stop_blob:
            iterations = 1 if step.only_once else None
        else:
            iterations = step.num_iter if step.HasField("num_iter") else 1
        nets = [self.net(ws, step.name, n) for n in step.network]
        done = 0
        while iterations is None or done < iterations:
            if self.failed.is_set():
                raise _Cancelled(step.name)
            if self._run_body(step, ws, nets):
                return
            done += 1

    def _run_body(self, step: Any, ws: Any, nets: list) -> bool:
        """One iteration of a step; True once the stop blob says stop."""
        if nets:
            for net in nets:
                net.run()
                if self._should_stop(step, ws):
                    return True
            return False
        instances = max(1, step.num_concurrent_instances)
        if step.substep and (step.concurrent_substeps or instances > 1):
            self._run_concurrently(list(step.substep) * instances, ws)
            return self._should_stop(step, ws)
        for sub in step.substep:
            self.run_step(sub, ws)
            if self._should_stop(step, ws):
                return True
        return not step.substep  # an empty step has nothing to repeat

    def _run_concurrently(self, steps: list, ws: Any) -> None:
        """Run ``steps`` on threads; the first failure (in time) stops the others at their
        next iteration and is raised."""
        def guarded(sub: Any) -> None:
            try:
                self.run_step(sub, ws)
            except BaseException:
                self.failed.set()
                raise

        error: Optional[BaseException] = None
        with cf.ThreadPoolExecutor(max_workers=len(steps),
                                   thread_name_prefix="c2lite-plan") as pool:
            for future in cf.as_completed([pool.submit(guarded, s) for s in steps]):
                exc = future.exception()
                if exc is not None and (error is None or isinstance(error, _Cancelled)):
                    error = exc
        if error is not None:
            raise error

    def _should_stop(self, step: Any, ws: Any) -> bool:
        if not step.should_stop_blob:
            return False
        value = ws.get_blob(step.should_stop_blob)
        try:
            return bool(np.asarray(value).reshape(-1)[0])
        except (IndexError, TypeError, ValueError):
            raise EnforceError(f"should_stop_blob {step.should_stop_blob} of step {step.name} "
                               "must hold a scalar bool", blob=step.should_stop_blob) from None


def run_plan(plan: Any, ws: Any) -> bool:
    """Run every execution step of ``plan`` in order in ``ws``."""
    state = _PlanRun(plan, ws)
    if not plan.execution_step:
        log.warning("Nothing to run - did you define a correct plan?")
        return True
    for step in plan.execution_step:
        state.run_step(step, ws)
    return True
