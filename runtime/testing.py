"""Operator test helpers with Caffe2's semantics and defaults (reference §5).

What ``caffe2.python.hypothesis_test_util``, ``device_checker`` and ``gradient_checker`` offered,
for c2lite ops:

* check functions usable from plain pytest tests — :func:`assertReferenceChecks`,
  :func:`assertDeviceChecks`, :func:`assertGradientChecks`, :func:`assertRunOpRaises`,
  :func:`assertValidationChecks` — and :class:`HypothesisTestCase`, a ``unittest.TestCase``
  whose methods of the same names call them;
* :class:`GradientChecker` (op level, loss = 0.5·Σ out², central differences),
  :class:`DeviceChecker`, and :class:`NetGradientChecker` (net level, loss = Σ out);
* hypothesis strategies in the style of ``hu``: :func:`arrays`, :func:`tensor`,
  :func:`tensors`, :func:`lengths`, ..., the device lists ``device_options``, ``cpu_do``,
  ``gpu_do`` and the ``gcs`` / ``gcs_cpu_only`` / ``gcs_gpu_only`` dicts.

Differences from Caffe2, all deliberate:

* Every check runs in its own named workspace and *always* switches back to the caller's
  workspace (try/finally), also when an assertion fails; Caffe2 left you inside ``temp_ws``.
* The checks deep-copy ``op`` before setting its device option; Caffe2 mutated the caller's op
  in the gradient checker.
* :meth:`GradientChecker.CheckSimple` derives ``g_input`` from the maker even when ``grad_ops``
  is passed (Caffe2 raised NameError there), and never modifies the caller's input arrays.
* The loss is accumulated in float64. When the inputs are float64 the perturbation and the
  estimate are float64 too; for float32 inputs they stay float32 as in Caffe2.
* A sparse gradient is densified with NumPy (``np.add.at``) instead of a ScatterWeightedSum op.
* The gradient checker's workspace is named ``gradient_check`` (plus the device for non-CPU
  options) rather than ``str(device_option)``, which is the empty string for CPU.
* Shape/type inference is not cross-checked by assertReferenceChecks (it was warn-only).

Hypothesis profiles "dev" (10 examples, the default name), "sandcastle" (100, derandomized)
and "debug" (1000) are registered on import. A profile is *loaded* on import only when the
environment variable ``CAFFE2_HYPOTHESIS_PROFILE`` is set: loading one changes the global
default settings of every hypothesis test in the process, which would silently override what
other test files rely on. Call :func:`load_profile` to opt in explicitly.
"""
from __future__ import annotations

import contextlib
import copy
import itertools
import os
import unittest
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from c2lite import core, workspace
from c2lite.errors import GradientError
from c2lite.gradient import GradientRegistry, GradientSlice
from c2lite.proto import caffe2_pb2

__all__ = [
    "HypothesisTestCase", "GradientChecker", "DeviceChecker", "NetGradientChecker",
    "assertReferenceChecks", "assertDeviceChecks", "assertGradientChecks",
    "assertRunOpRaises", "assertValidationChecks", "temp_workspace", "getGradientForOp",
    "arrays", "tensor", "tensor1d", "tensors", "tensors1d", "lengths", "segment_ids",
    "dims", "elements_of_type", "device_options", "cpu_do", "gpu_do", "gcs", "gcs_cpu_only",
    "gcs_gpu_only", "expanded_device_options", "load_profile",
]


# ---------------------------------------------------------------------------------------------
# workspaces
# ---------------------------------------------------------------------------------------------
_temp_counter = itertools.count(1)


@contextlib.contextmanager
def temp_workspace(name: str = "temp_ws", inherit_blobs: bool = False) -> Iterator[str]:
    """Run the block in a fresh named workspace, then reset it and switch back (always).

    With ``inherit_blobs`` the temporary workspace starts with the caller's blobs (the same
    values; ops replace blob values rather than mutating them, so the caller's workspace is
    left as it was).
    """
    old = workspace.CurrentWorkspace()
    if name == old:
        name = f"{name}_{next(_temp_counter)}"
    snapshot = {}
    if inherit_blobs:
        current = workspace.C()
        snapshot = {b: current.get_blob(b) for b in current.blobs()}
    workspace.SwitchWorkspace(name, True)
    try:
        workspace.ResetWorkspace()
        target = workspace.C()
        for blob, value in snapshot.items():
            target.set_blob(blob, value)
        yield name
    finally:
        try:
            workspace.ResetWorkspace()
        finally:
            workspace.SwitchWorkspace(old)


def _with_device(op: caffe2_pb2.OperatorDef,
                 device_option: Optional[caffe2_pb2.DeviceOption]) -> caffe2_pb2.OperatorDef:
    op = copy.deepcopy(op)
    op.device_option.CopyFrom(device_option if device_option is not None
                              else caffe2_pb2.DeviceOption())
    return op


def _input_devices(op: caffe2_pb2.OperatorDef, input_device_options: Optional[dict]) -> dict:
    if input_device_options:
        return {str(k): v for k, v in input_device_options.items()}
    return core.InferOpBlobDevicesAsDict(op)[0]


def _feed_inputs(op: caffe2_pb2.OperatorDef, inputs: Sequence[Any],
                 device_option: Optional[caffe2_pb2.DeviceOption],
                 input_device_options: Optional[dict]) -> None:
    devices = _input_devices(op, input_device_options)
    for name, value in zip(op.input, inputs):
        workspace.FeedBlob(name, value, devices.get(name, device_option))


def getGradientForOp(op: caffe2_pb2.OperatorDef) -> tuple:
    """The op's gradient ops and g_input, with output gradients named ``<out>_grad``."""
    return GradientRegistry.GetGradientForOp(op, [o + "_grad" for o in op.output])


def _device_label(device_option: Optional[caffe2_pb2.DeviceOption]) -> str:
    if device_option is None or device_option.device_type == caffe2_pb2.CPU:
        return ""
    return f"_{device_option.device_type}_{device_option.device_id}"


# ---------------------------------------------------------------------------------------------
# gradient checker (op level)
# ---------------------------------------------------------------------------------------------
class GradientChecker:
    """Compare an op's analytic gradient with central differences of
    loss = 0.5 · Σ_{k in outputs_with_grads} sum(out_k²)."""

    def __init__(self, stepsize: float, threshold: float,
                 device_option: Optional[caffe2_pb2.DeviceOption] = None,
                 workspace_name: str = "gradient_check",
                 input_device_options: Optional[dict] = None) -> None:
        self._stepsize = stepsize
        self._threshold = threshold
        self._device_option = device_option if device_option is not None else \
            caffe2_pb2.DeviceOption()
        self._workspace_name = workspace_name
        self._input_device_options = input_device_options or {}

    def GetLossAndGrad(self, op: Any, grad_ops: Sequence[Any], inputs: Sequence[Any],
                       input_names: Sequence[str], input_to_check: int, grad_name: Any,
                       outputs_with_grads: Sequence[int], devices: dict) -> tuple:
        """Feed every input, run op and grad ops; return (loss, gradient of the input)."""
        for name, value in zip(input_names, inputs):
            workspace.FeedBlob(name, value, devices.get(name, self._device_option))
        workspace.RunOperatorOnce(op)
        loss = 0.0
        for idx in outputs_with_grads:
            name = op.output[idx]
            out = workspace.FetchBlob(name)
            loss += float(np.sum(np.square(np.asarray(out, dtype=np.float64))))
            workspace.FeedBlob(name + "_grad", out, self._device_option)
        loss /= 2.0
        workspace.RunOperatorsOnce(grad_ops)
        x = inputs[input_to_check]
        if isinstance(grad_name, GradientSlice):
            indices = np.asarray(workspace.FetchBlob(str(grad_name.indices))).astype(np.int64)
            values = np.asarray(workspace.FetchBlob(str(grad_name.values)))
            grad = np.zeros_like(x)
            np.add.at(grad, indices.reshape(-1),
                      values.reshape((indices.size,) + x.shape[1:]).astype(grad.dtype))
        else:
            grad = workspace.FetchBlob(str(grad_name))
        return loss, grad

    def CheckSimple(self, op: caffe2_pb2.OperatorDef, inputs: Sequence[Any], input_to_check: int,
                    outputs_with_grads: Sequence[int], grad_ops: Optional[Sequence[Any]] = None,
                    input_device_options: Optional[dict] = None) -> tuple:
        """(ok, analytic gradient, estimated gradient) for input ``input_to_check``."""
        op = _with_device(op, self._device_option)
        maker_ops, g_input = getGradientForOp(op)
        grad_ops = list(maker_ops if grad_ops is None else grad_ops)
        grad_name = g_input[input_to_check]
        if grad_name is None:
            raise GradientError(f"Operator {op.type} produces no gradient for input "
                                f"{input_to_check} ({op.input[input_to_check]})")
        devices = _input_devices(op, input_device_options or self._input_device_options)
        values = [np.array(v, copy=True) for v in inputs]
        x = values[input_to_check]
        if x.dtype.kind != "f":
            raise GradientError(f"Input {op.input[input_to_check]} is {x.dtype}; only "
                                "floating-point inputs have a gradient to check")
        args = (op, grad_ops, values, list(op.input), input_to_check, grad_name,
                list(outputs_with_grads), devices)
        with temp_workspace(self._workspace_name):
            _, grad = self.GetLossAndGrad(*args)
            grad = np.asarray(grad)
            estimate = np.zeros_like(x)
            if estimate.shape != grad.shape:
                raise GradientError(f"Mismatched gradient shapes: estimated ({estimate.shape}), "
                                    f"grad ({grad.shape})")
            for i in range(x.size):
                original = x.flat[i]
                x.flat[i] = original + self._stepsize
                pos_loss, _ = self.GetLossAndGrad(*args)
                x.flat[i] = original - self._stepsize
                neg_loss, _ = self.GetLossAndGrad(*args)
                x.flat[i] = original
                estimate.flat[i] = (pos_loss - neg_loss) / self._stepsize / 2
        fail = ~np.isclose(grad, estimate, atol=self._threshold, rtol=self._threshold)
        if np.any(fail):
            idx = np.flatnonzero(fail)
            print("Failed. [idx, grad, grad_estimate] are:")
            print(np.vstack([idx, grad.flat[idx], estimate.flat[idx]]).T)
            return False, grad, estimate
        return True, grad, estimate


# ---------------------------------------------------------------------------------------------
# device checker
# ---------------------------------------------------------------------------------------------
class DeviceChecker:
    """Run one op on several devices and compare every device's outputs with device 0's."""

    def __init__(self, threshold: float, device_options: Sequence[caffe2_pb2.DeviceOption]
                 ) -> None:
        self._threshold = threshold
        self._device_options = list(device_options)

    def CheckSimple(self, op: caffe2_pb2.OperatorDef, inputs: Sequence[Any],
                    outputs_to_check: Any, input_device_options: Optional[dict] = None) -> bool:
        if isinstance(outputs_to_check, (int, np.integer)):
            outputs_to_check = [int(outputs_to_check)]
        outputs_to_check = list(outputs_to_check)
        overrides = {str(k): v for k, v in (input_device_options or {}).items()}
        results = []
        with temp_workspace("_device_check_"):
            for option in self._device_options:
                run_op = _with_device(op, option)
                for name, value in zip(run_op.input, inputs):
                    workspace.FeedBlob(name, np.array(value), overrides.get(name, option))
                workspace.RunOperatorOnce(run_op)
                results.append([workspace.FetchBlob(run_op.output[i]) for i in outputs_to_check])
                workspace.ResetWorkspace()
        success = True
        for d in range(1, len(results)):
            for j, idx in enumerate(outputs_to_check):
                x, y = results[d][j], results[0][j]
                if not np.allclose(x, y, atol=self._threshold, rtol=self._threshold):
                    print(f"Failure in checking device option {d} and output {op.output[idx]}. "
                          "The outputs are:")
                    print(np.asarray(x).flatten())
                    print(np.asarray(y).flatten())
                    if np.shape(x) == np.shape(y):
                        print(np.max(np.abs(np.asarray(x, np.float64) - y)))
                    success = False
        return success


# ---------------------------------------------------------------------------------------------
# net gradient checker
# ---------------------------------------------------------------------------------------------
def _assert_close(a: Any, b: Any, threshold: float, err_msg: str = "") -> tuple:
    np.testing.assert_allclose(a, b, atol=threshold, rtol=threshold, err_msg=err_msg)
    delta = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).flatten()
    return (float(np.mean(delta)), float(np.max(delta))) if delta.size else (0.0, 0.0)


def _grad_value(grad_map: dict, blob: str) -> np.ndarray:
    grad = grad_map[blob]
    if isinstance(grad, GradientSlice):
        x = np.asarray(workspace.FetchBlob(blob))
        indices = np.asarray(workspace.FetchBlob(str(grad.indices))).astype(np.int64)
        values = np.asarray(workspace.FetchBlob(str(grad.values)))
        dense = np.zeros_like(x)
        np.add.at(dense, indices.reshape(-1),
                  values.reshape((indices.size,) + x.shape[1:]).astype(dense.dtype))
        return dense
    return workspace.FetchBlob(str(grad))


def _net_of(net: Any) -> core.Net:
    return net if isinstance(net, core.Net) else core.Net(net)


def _forward_and_grads(net: Any, outputs: Sequence[Any], outputs_with_grad: Sequence[Any],
                       input_values: Optional[dict], inputs_with_grads: Sequence[Any]) -> tuple:
    """Clone ``net``, add its backward pass for ``outputs_with_grad`` (seeded with ones), feed
    ``input_values``, run it once; return (forward results, {input: gradient}, grad net)."""
    base = _net_of(net)
    grad_net = base.Clone(base.Name() + "_copy")
    grad_map = grad_net.AddGradientOperators([str(o) for o in outputs_with_grad])
    for name, value in (input_values or {}).items():
        workspace.FeedBlob(str(name), value)
    for blob in inputs_with_grads:
        if str(blob) not in grad_map:
            raise AssertionError(f"Failed to find input {blob} in gradient map {grad_map}")
    workspace.RunNetOnce(grad_net)
    forward = [(str(o), workspace.FetchBlob(str(o))) for o in outputs]
    grads = {str(b): _grad_value(grad_map, str(b)) for b in inputs_with_grads}
    return forward, grads, grad_net


class NetGradientChecker:
    """Gradient checks of whole nets (loss = plain sum of the chosen outputs)."""

    @staticmethod
    def CompareNets(nets: Sequence[Any], outputs: Sequence[Sequence[Any]],
                    outputs_with_grad_ids: Sequence[int], inputs_with_grads: Sequence[Any],
                    input_values: Optional[dict] = None, threshold: float = 1e-7,
                    print_net_images: bool = False) -> None:
        """Forward results and gradients of several nets computing the same thing agree."""
        if len(nets) < 2:
            raise ValueError("CompareNets needs at least two nets")
        results = []
        with temp_workspace("net_gradient_check", inherit_blobs=True):
            for net, net_outputs in zip(nets, outputs):
                with_grad = [net_outputs[i] for i in outputs_with_grad_ids]
                forward, grads, _ = _forward_and_grads(net, net_outputs, with_grad,
                                                       input_values, inputs_with_grads)
                results.append((forward, grads))
        first_forward, first_grads = results[0]
        for forward, grads in results[1:]:
            assert len(forward) == len(first_forward)
            for idx, ((b1, v1), (b2, v2)) in enumerate(zip(first_forward, forward)):
                _assert_close(v1, v2, threshold, err_msg=(
                    f"Different forward pass results for output id {idx}. Corresponding "
                    f"output blobs: {b1} and {b2}"))
            assert grads.keys() == first_grads.keys()
            for blob, value in grads.items():
                _assert_close(first_grads[blob], value, threshold,
                              err_msg=f"Different gradients for input {blob}")

    @staticmethod
    def Check(net: Any, outputs_with_grad: Sequence[Any], input_values: dict,
              input_to_check: Any, step_size: float = 1e-4, threshold: float = 0.05,
              print_net: bool = True) -> tuple:
        """Analytic gradient of sum(outputs_with_grad) w.r.t. ``input_to_check`` against
        central differences; raises AssertionError on mismatch, else returns
        (mean abs error, max abs error)."""
        input_to_check = str(input_to_check)
        values = {str(k): np.asarray(v) for k, v in input_values.items()}
        with temp_workspace("net_gradient_check", inherit_blobs=True):
            _, grads, full_net = _forward_and_grads(net, [], outputs_with_grad, values,
                                                    [input_to_check])
            analytic = grads[input_to_check]

            def loss_at(value: np.ndarray) -> float:
                workspace.FeedBlob(input_to_check, value)
                workspace.RunNetOnce(full_net)
                return float(sum(np.sum(np.asarray(workspace.FetchBlob(str(o)), np.float64))
                                 for o in outputs_with_grad))

            x = values[input_to_check]
            estimate = np.zeros_like(x)
            for i in range(x.size):
                plus = x.copy()
                plus.flat[i] += step_size
                minus = x.copy()
                minus.flat[i] -= step_size
                estimate.flat[i] = (loss_at(plus) - loss_at(minus)) / step_size / 2
        err_msg = f"Error in gradient check for net_copy {_net_of(net).Name()}"
        if print_net:
            err_msg += f": {full_net.Proto()}"
        return _assert_close(analytic, estimate, threshold, err_msg)


# ---------------------------------------------------------------------------------------------
# check functions (usable from plain pytest tests)
# ---------------------------------------------------------------------------------------------
def assertReferenceChecks(device_option: Any, op: caffe2_pb2.OperatorDef, inputs: Sequence[Any],
                          reference: Callable, input_device_options: Optional[dict] = None,
                          threshold: float = 1e-4, output_to_grad: Optional[str] = None,
                          grad_reference: Optional[Callable] = None, atol: Optional[float] = None,
                          outputs_to_check: Optional[Sequence[int]] = None) -> list:
    """Run ``op`` on ``inputs`` and compare its outputs with ``reference(*inputs)``;
    optionally its gradient (for ``output_to_grad``) with ``grad_reference``."""
    op = _with_device(op, device_option)
    if len(op.input) > len(inputs):
        raise ValueError(f"must supply an input for each input on the op: {list(op.input)} vs "
                         f"{len(inputs)} inputs")
    with temp_workspace("temp_ws"):
        _feed_inputs(op, inputs, device_option, input_device_options)
        net = core.Net("opnet")
        net.Proto().op.extend([op])
        workspace.RunNetOnce(net)
        reference_outputs = reference(*inputs)
        if not isinstance(reference_outputs, (tuple, list)):
            raise RuntimeError("You are providing a wrong reference implementation. A proper "
                               "one should return a tuple/list of numpy arrays.")
        if not outputs_to_check:
            if len(reference_outputs) != len(op.output):
                raise AssertionError(f"the reference returned {len(reference_outputs)} outputs "
                                     f"but the op has {len(op.output)}")
            outputs_to_check = list(range(len(op.output)))
        outs = []
        for index, ref in zip(outputs_to_check, reference_outputs):
            name = op.output[index]
            output = workspace.FetchBlob(name)
            if not isinstance(output, np.ndarray) or output.dtype.kind in "SUO":
                np.testing.assert_array_equal(np.asarray(output, dtype=object),
                                              np.asarray(ref, dtype=object),
                                              err_msg=f"Output {name} is not matching the "
                                                      "reference")
            else:
                np.testing.assert_allclose(
                    output, ref, atol=threshold if atol is None else atol, rtol=threshold,
                    err_msg=f"Output {name} is not matching the reference")
            outs.append(output)
        if grad_reference is not None:
            if output_to_grad is None:
                raise AssertionError("If grad_reference is set, output_to_grad has to be set "
                                     "as well")
            with core.DeviceScope(device_option):
                _assert_grad_reference(op, inputs, reference_outputs, str(output_to_grad),
                                       grad_reference, threshold)
        return outs


def _assert_grad_reference(op: Any, inputs: Sequence[Any], ref_outputs: Sequence[Any],
                           output_to_grad: str, grad_reference: Callable,
                           threshold: float) -> None:
    grad_blob = output_to_grad + "_grad"
    grad_ops, grad_map = GradientRegistry.GetBackwardPass([op], {output_to_grad: grad_blob})
    output_grad = workspace.FetchBlob(output_to_grad)
    grad_ref_outputs = grad_reference(output_grad, ref_outputs, inputs)
    # As in Caffe2: the output gradient fed is the forward output value itself.
    workspace.FeedBlob(grad_blob, workspace.FetchBlob(output_to_grad))
    workspace.RunOperatorsOnce(grad_ops)
    if len(grad_ref_outputs) != len(inputs):
        raise AssertionError(f"grad_reference returned {len(grad_ref_outputs)} entries for "
                             f"{len(inputs)} inputs")
    for name, ref in zip(op.input, grad_ref_outputs):
        grad = grad_map.get(name)
        if not grad:
            if ref is not None:
                raise AssertionError(f"Input {name} has no gradient but the reference gives "
                                     "one")
            continue
        if isinstance(grad, GradientSlice):
            ref_vals, ref_indices = ref
            val_name = grad.values
        else:
            ref_vals, ref_indices, val_name = ref, None, grad
        vals = workspace.FetchBlob(str(val_name))
        np.testing.assert_allclose(vals, ref_vals, atol=threshold, rtol=threshold,
                                   err_msg=f"Gradient {val_name} (x) is not matching the "
                                           "reference (y)")
        if ref_indices is not None:
            indices = workspace.FetchBlob(str(grad.indices))
            np.testing.assert_allclose(indices, ref_indices, atol=1e-4, rtol=1e-4)


def assertDeviceChecks(device_options: Sequence[Any], op: caffe2_pb2.OperatorDef,
                       inputs: Sequence[Any], outputs_to_check: Any,
                       input_device_options: Optional[dict] = None,
                       threshold: float = 0.01) -> None:
    """Outputs ``outputs_to_check`` (indices) agree across ``device_options``."""
    checker = DeviceChecker(threshold, device_options=device_options)
    if not checker.CheckSimple(op, inputs, outputs_to_check, input_device_options):
        raise AssertionError(f"Device check failed for {op.type}: outputs differ between "
                             "devices (see the printed values)")


def assertGradientChecks(device_option: Any, op: caffe2_pb2.OperatorDef, inputs: Sequence[Any],
                         outputs_to_check: int, outputs_with_grads: Sequence[int],
                         grad_ops: Optional[Sequence[Any]] = None, threshold: float = 0.005,
                         stepsize: float = 0.05,
                         input_device_options: Optional[dict] = None) -> None:
    """The analytic gradient of input ``outputs_to_check`` (an *input* index, Caffe2's
    misnomer) matches central differences of 0.5·Σ out² over ``outputs_with_grads``."""
    checker = GradientChecker(stepsize=stepsize, threshold=threshold,
                              device_option=device_option,
                              workspace_name="gradient_check" + _device_label(device_option),
                              input_device_options=input_device_options)
    ok, grad, estimate = checker.CheckSimple(op, inputs, outputs_to_check, outputs_with_grads,
                                             grad_ops=grad_ops,
                                             input_device_options=input_device_options)
    if grad.shape != estimate.shape:
        raise AssertionError(f"gradient shape {grad.shape} != estimate shape {estimate.shape}")
    if not ok:
        raise AssertionError(f"Gradient check failed for input {op.input[outputs_to_check]}:"
                             f"\nanalytic  {np.asarray(grad).flatten()}"
                             f"\nestimated {np.asarray(estimate).flatten()}")


def assertRunOpRaises(device_option: Any, op: caffe2_pb2.OperatorDef, inputs: Sequence[Any],
                      input_device_options: Optional[dict] = None,
                      exception: Any = (Exception,), regexp: Optional[str] = None) -> BaseException:
    """Running ``op`` on ``inputs`` raises ``exception`` (matching ``regexp``); returns it."""
    import re
    op = _with_device(op, device_option)
    with temp_workspace("temp_ws"):
        _feed_inputs(op, inputs, device_option, input_device_options)
        try:
            workspace.RunOperatorOnce(op)
        except exception as exc:
            if regexp is not None and not re.search(regexp, str(exc)):
                raise AssertionError(f'"{regexp}" does not match "{exc}"') from exc
            return exc
    raise AssertionError(f"{exception} not raised by {op.type}")


def assertValidationChecks(device_option: Any, op: caffe2_pb2.OperatorDef, inputs: Sequence[Any],
                           validator: Callable, input_device_options: Optional[dict] = None,
                           as_kwargs: bool = True, init_net: Any = None) -> None:
    """Run ``op`` and hand inputs and outputs to ``validator`` (by blob name with
    ``as_kwargs``, else as ``inputs=``/``outputs=`` lists)."""
    if as_kwargs and len(set(op.input) | set(op.output)) != len(op.input) + len(op.output):
        raise AssertionError("in-place ops are not supported in as_kwargs mode")
    op = _with_device(op, device_option)
    with temp_workspace("temp_ws"):
        _feed_inputs(op, inputs, device_option, input_device_options)
        if init_net is not None:
            workspace.RunNetOnce(init_net)
        workspace.RunOperatorOnce(op)
        outputs = [workspace.FetchBlob(n) for n in op.output]
        if as_kwargs:
            validator(**dict(zip(list(op.input) + list(op.output), list(inputs) + outputs)))
        else:
            validator(inputs=list(inputs), outputs=outputs)


# ---------------------------------------------------------------------------------------------
# unittest base class
# ---------------------------------------------------------------------------------------------
class HypothesisTestCase(unittest.TestCase):
    """Caffe2's HypothesisTestCase: a fresh workspace around every test, no engine
    preferences, and the check methods."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        core.SetEnginePref({}, {})

    def setUp(self) -> None:
        super().setUp()
        workspace.ResetWorkspace()

    def tearDown(self) -> None:
        workspace.ResetWorkspace()
        super().tearDown()

    def assertReferenceChecks(self, device_option: Any, op: Any, inputs: Sequence[Any],
                              reference: Callable, input_device_options: Optional[dict] = None,
                              threshold: float = 1e-4, output_to_grad: Optional[str] = None,
                              grad_reference: Optional[Callable] = None,
                              atol: Optional[float] = None,
                              outputs_to_check: Optional[Sequence[int]] = None) -> list:
        return assertReferenceChecks(device_option, op, inputs, reference,
                                     input_device_options, threshold, output_to_grad,
                                     grad_reference, atol, outputs_to_check)

    def assertDeviceChecks(self, device_options: Sequence[Any], op: Any, inputs: Sequence[Any],
                           outputs_to_check: Any, input_device_options: Optional[dict] = None,
                           threshold: float = 0.01) -> None:
        assertDeviceChecks(device_options, op, inputs, outputs_to_check, input_device_options,
                           threshold)

    def assertGradientChecks(self, device_option: Any, op: Any, inputs: Sequence[Any],
                             outputs_to_check: int, outputs_with_grads: Sequence[int],
                             grad_ops: Optional[Sequence[Any]] = None,
                             threshold: float = 0.005, stepsize: float = 0.05,
                             input_device_options: Optional[dict] = None) -> None:
        assertGradientChecks(device_option, op, inputs, outputs_to_check, outputs_with_grads,
                             grad_ops, threshold, stepsize, input_device_options)

    def assertRunOpRaises(self, device_option: Any, op: Any, inputs: Sequence[Any],
                          input_device_options: Optional[dict] = None,
                          exception: Any = (Exception,), regexp: Optional[str] = None) -> Any:
        return assertRunOpRaises(device_option, op, inputs, input_device_options, exception,
                                 regexp)

    def assertValidationChecks(self, device_option: Any, op: Any, inputs: Sequence[Any],
                               validator: Callable, input_device_options: Optional[dict] = None,
                               as_kwargs: bool = True, init_net: Any = None) -> None:
        assertValidationChecks(device_option, op, inputs, validator, input_device_options,
                               as_kwargs, init_net)


# ---------------------------------------------------------------------------------------------
# devices and hypothesis strategies (caffe2.python.hypothesis_test_util as ``hu``)
# ---------------------------------------------------------------------------------------------
cpu_do = caffe2_pb2.DeviceOption()
gpu_do = caffe2_pb2.DeviceOption(device_type=caffe2_pb2.CUDA)
_HAS_GPU = workspace.has_gpu_support()
gpu_device_options = [gpu_do] if _HAS_GPU else []
device_options = [cpu_do] + gpu_device_options


def expanded_device_options() -> list:
    """CPU plus one option per visible CUDA device."""
    return [cpu_do] + [caffe2_pb2.DeviceOption(device_type=caffe2_pb2.CUDA, device_id=i)
                       for i in range(workspace.NumCudaDevices())]


try:  # hypothesis is a test dependency; the checks above work without it
    import hypothesis
    import hypothesis.extra.numpy as _hnp
    import hypothesis.strategies as st
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover
    hypothesis = None


def _profile_settings(**kwargs: Any) -> dict:
    return dict(suppress_health_check=[HealthCheck.too_slow], database=None, deadline=None,
                **kwargs)


def load_profile(name: Optional[str] = None) -> None:
    """Load a Caffe2 hypothesis profile (default: $CAFFE2_HYPOTHESIS_PROFILE or "dev")."""
    settings.load_profile(name or os.getenv("CAFFE2_HYPOTHESIS_PROFILE", "dev"))


if hypothesis is not None:
    settings.register_profile("sandcastle", **_profile_settings(max_examples=100,
                                                                derandomize=True))
    settings.register_profile("dev", **_profile_settings(max_examples=10))
    settings.register_profile("debug", **_profile_settings(max_examples=1000))
    if os.getenv("CAFFE2_HYPOTHESIS_PROFILE"):
        load_profile()

    def dims(min_value: int = 1, max_value: int = 5) -> Any:
        return st.integers(min_value=min_value, max_value=max_value)

    def elements_of_type(dtype: Any = np.float32, filter_: Optional[Callable] = None) -> Any:
        """Floats in [-1, 1]; int32 in [0, 2^31-1]; int64 in [0, 2^63-1]; bools."""
        dtype = np.dtype(dtype)
        if dtype.kind == "f":
            width = {2: 16, 4: 32, 8: 64}[dtype.itemsize]
            elems = st.floats(min_value=-1.0, max_value=1.0, width=width)
        elif dtype == np.int32:
            elems = st.integers(min_value=0, max_value=2**31 - 1)
        elif dtype == np.int64:
            elems = st.integers(min_value=0, max_value=2**63 - 1)
        elif dtype == np.bool_:
            elems = st.booleans()
        else:
            raise ValueError(f"Unexpected dtype without elements provided: {dtype}")
        return elems if filter_ is None else elems.filter(filter_)

    def arrays(dims: Sequence[int], dtype: Any = np.float32, elements: Any = None,
               unique: bool = False) -> Any:
        if elements is None:
            elements = elements_of_type(dtype)
        return _hnp.arrays(dtype, tuple(dims), elements=elements, unique=unique)

    def tensor(min_dim: int = 1, max_dim: int = 4, dtype: Any = np.float32,
               elements: Any = None, unique: bool = False, **kwargs: Any) -> Any:
        dims_ = st.lists(dims(**kwargs), min_size=min_dim, max_size=max_dim)
        return dims_.flatmap(lambda d: arrays(d, dtype, elements, unique=unique))

    def tensor1d(min_len: int = 1, max_len: int = 64, dtype: Any = np.float32,
                 elements: Any = None) -> Any:
        return tensor(1, 1, dtype, elements, min_value=min_len, max_value=max_len)

    def tensors(n: int, min_dim: int = 1, max_dim: int = 4, dtype: Any = np.float32,
                elements: Any = None, **kwargs: Any) -> Any:
        """``n`` arrays of one common random shape."""
        dims_ = st.lists(dims(**kwargs), min_size=min_dim, max_size=max_dim)
        return dims_.flatmap(
            lambda d: st.lists(arrays(d, dtype, elements), min_size=n, max_size=n))

    def tensors1d(n: int, min_len: int = 1, max_len: int = 64, dtype: Any = np.float32,
                  elements: Any = None) -> Any:
        return tensors(n, 1, 1, dtype, elements, min_value=min_len, max_value=max_len)

    def segment_ids(size: int, is_sorted: bool) -> Any:
        if size == 0:
            return st.just(np.empty(shape=[0], dtype=np.int32))
        if is_sorted:
            return arrays([size], dtype=np.int32, elements=st.booleans()).map(
                lambda m: np.cumsum(m, dtype=np.int32) - m[0])
        return arrays([size], dtype=np.int32, elements=st.integers(0, 2 * size))

    def lengths(size: int, min_segments: Optional[int] = None,
                max_segments: Optional[int] = None, **kwargs: Any) -> Any:
        """int32 segment lengths that add up to ``size``."""
        if min_segments is None:
            min_segments = 0
        if max_segments is None:
            max_segments = size
        if size < 1 and min_segments < 1:
            min_segments = 0
        if size > 0 and min_segments < 1:
            min_segments = 1
        if max_segments < min_segments:
            raise ValueError(f"max_segments ({max_segments}) < min_segments ({min_segments})")
        if size == 0 and max_segments == 0:
            return st.just(np.empty(shape=[0], dtype=np.int32))
        if max_segments == 0:
            raise ValueError("size > 0 needs at least one segment")

        def cut(n_segments: int) -> Any:
            if n_segments == 0:
                return st.just(np.zeros([0], dtype=np.int32))
            return st.lists(st.integers(0, size), min_size=n_segments - 1,
                            max_size=n_segments - 1).map(
                lambda cuts: np.diff([0] + sorted(cuts) + [size]).astype(np.int32))
        return st.integers(min_segments, max_segments).flatmap(cut)

    def lengths_tensor(min_segments: Optional[int] = None, max_segments: Optional[int] = None,
                       *args: Any, **kwargs: Any) -> Any:
        """(data, lengths) with lengths covering the first dimension of data."""
        return tensor(*args, **kwargs).flatmap(
            lambda data: st.tuples(st.just(data),
                                   lengths(data.shape[0], min_segments, max_segments)))

    gcs = dict(gc=st.sampled_from(device_options), dc=st.just(device_options))
    gcs_cpu_only = dict(gc=st.sampled_from([cpu_do]), dc=st.just([cpu_do]))
    gcs_gpu_only = dict(gc=st.sampled_from(gpu_device_options) if gpu_device_options
                        else st.nothing(), dc=st.just(gpu_device_options))
