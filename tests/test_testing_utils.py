"""c2lite.testing: the Caffe2-style check helpers must pass on correct ops and gradients and
fail on wrong ones, restore the caller's workspace, and offer hu-style strategies/profiles."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from c2lite import core, testing, workspace
from c2lite import testing as hu
from c2lite.errors import EnforceError
from c2lite.gradient import GradientMakerBase, GradientSlice, has_gradient, register_gradient
from c2lite.operator import Operator
from c2lite.registry import register_cpu
from c2lite.schema import OPERATOR_SCHEMA, get_schema

cpu = testing.cpu_do


# ---------------------------------------------------------------------------------------------
# test-only ops: Y = 2X with a correct and a deliberately wrong gradient maker, a
# nondeterministic counter, and a row-index helper for a sparse gradient
# ---------------------------------------------------------------------------------------------
class _Double(Operator):
    def compute(self, x):
        return x * 2


class _Counter(Operator):
    runs = 0

    def compute(self, x):
        type(self).runs += 1
        return np.full(x.shape, float(type(self).runs), dtype=np.float32)


class _RowIndices(Operator):
    def compute(self, x):
        return np.arange(x.shape[0], dtype=np.int64)


class _DoubleGradientGood(GradientMakerBase):
    """d(2x) = 2·dY, computed as Sum(dY, dY)."""

    def GetGradientDefs(self):
        return self.SingleGradientDef("Sum", "", [self.GO(0), self.GO(0)], [self.GI(0)])


class _DoubleGradientBad(GradientMakerBase):
    """Deliberately wrong: forgets the factor 2."""

    def GetGradientDefs(self):
        return self.SingleGradientDef("Copy", "", [self.GO(0)], [self.GI(0)])


def _double_sparse_gradient(op, g_output):
    """A sparse gradient of Y = 2X: every row, values 2·dY."""
    x = op.input[0]
    ops = [core.CreateOperator("TuRowIndices", [x], [x + "_gi"]),
           core.CreateOperator("Sum", [g_output[0], g_output[0]], [x + "_gv"])]
    return ops, [GradientSlice(x + "_gi", x + "_gv")]


if get_schema("TuDoubleGood") is None:
    for _name, _cls in [("TuDoubleGood", _Double), ("TuDoubleBad", _Double),
                        ("TuDoubleSparse", _Double), ("TuCounter", _Counter),
                        ("TuRowIndices", _RowIndices)]:
        OPERATOR_SCHEMA(_name).NumInputs(1).NumOutputs(1)
        register_cpu(_name)(_cls)
if not has_gradient("TuDoubleGood"):
    register_gradient("TuDoubleGood")(_DoubleGradientGood)
    register_gradient("TuDoubleBad")(_DoubleGradientBad)
    register_gradient("TuDoubleSparse")(_double_sparse_gradient)


def x_of(shape=(3, 4), dtype=np.float32, seed=0):
    return np.random.RandomState(seed).uniform(-1, 1, size=shape).astype(dtype)


# ---------------------------------------------------------------------------------------------
# gradient checks
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradient_checks_pass_on_builtin_ops(dtype):
    x, z = x_of(dtype=dtype), x_of(dtype=dtype, seed=1)
    testing.assertGradientChecks(cpu, core.CreateOperator("Copy", ["X"], ["Y"]), [x], 0, [0])
    add = core.CreateOperator("Sum", ["X", "Z"], ["Y"])
    testing.assertGradientChecks(cpu, add, [x, z], 0, [0])
    testing.assertGradientChecks(cpu, add, [x, z], 1, [0])
    testing.assertGradientChecks(cpu, core.CreateOperator("TuDoubleGood", ["X"], ["Y"]), [x],
                                 0, [0])


def test_gradient_checks_fail_on_a_wrong_maker():
    bad = core.CreateOperator("TuDoubleBad", ["X"], ["Y"])
    with pytest.raises(AssertionError, match="Gradient check failed for input X"):
        testing.assertGradientChecks(cpu, bad, [x_of()], 0, [0])


def test_gradient_checker_values_dtypes_and_untouched_inputs():
    x = x_of(dtype=np.float64)
    before = x.copy()
    checker = testing.GradientChecker(stepsize=0.05, threshold=0.005)
    ok, grad, estimate = checker.CheckSimple(core.CreateOperator("TuDoubleGood", ["X"], ["Y"]),
                                             [x], 0, [0])
    # loss = 0.5 * sum((2x)^2) -> dloss/dx = 4x
    assert ok and grad.dtype == np.float64 and estimate.dtype == np.float64
    np.testing.assert_allclose(grad, 4 * x, rtol=1e-12)
    np.testing.assert_allclose(estimate, 4 * x, rtol=1e-9)
    np.testing.assert_array_equal(x, before)
    ok, grad, estimate = checker.CheckSimple(core.CreateOperator("TuDoubleBad", ["X"], ["Y"]),
                                             [x], 0, [0])
    assert not ok
    np.testing.assert_allclose(grad, 2 * x)
    ok, _, estimate = checker.CheckSimple(core.CreateOperator("Copy", ["X"], ["Y"]),
                                          [x_of()], 0, [0])
    assert ok and estimate.dtype == np.float32


def test_explicit_grad_ops_are_used_and_g_input_still_derived():
    op = core.CreateOperator("TuDoubleGood", ["X"], ["Y"])
    wrong = [core.CreateOperator("Copy", ["Y_grad"], ["X_grad"])]
    with pytest.raises(AssertionError):
        testing.assertGradientChecks(cpu, op, [x_of()], 0, [0], grad_ops=wrong)
    right = [core.CreateOperator("Sum", ["Y_grad", "Y_grad"], ["X_grad"])]
    testing.assertGradientChecks(cpu, op, [x_of()], 0, [0], grad_ops=right)


def test_sparse_gradient_is_densified():
    op = core.CreateOperator("TuDoubleSparse", ["X"], ["Y"])
    testing.assertGradientChecks(cpu, op, [x_of((4, 2))], 0, [0])


def test_gradient_check_does_not_touch_the_callers_op_or_workspace():
    workspace.ResetWorkspace()
    workspace.FeedBlob("mine", np.ones(2, np.float32))
    op = core.CreateOperator("Copy", ["X"], ["Y"])
    testing.assertGradientChecks(cpu, op, [x_of()], 0, [0])
    assert not op.HasField("device_option")
    assert workspace.CurrentWorkspace() == "default" and workspace.Blobs() == ["mine"]
    with pytest.raises(AssertionError):
        testing.assertGradientChecks(cpu, core.CreateOperator("TuDoubleBad", ["X"], ["Y"]),
                                     [x_of()], 0, [0])
    assert workspace.CurrentWorkspace() == "default" and workspace.Blobs() == ["mine"]
    workspace.ResetWorkspace()


# ---------------------------------------------------------------------------------------------
# reference, device, raises and validation checks
# ---------------------------------------------------------------------------------------------
def test_reference_checks_pass_and_return_outputs():
    x, z = x_of(), x_of(seed=1)
    op = core.CreateOperator("Sum", ["X", "Z"], ["Y"])
    (out,) = testing.assertReferenceChecks(cpu, op, [x, z], lambda a, b: (a + b,))
    np.testing.assert_allclose(out, x + z)
    # outputs_to_check and atol
    testing.assertReferenceChecks(cpu, op, [x, z], lambda a, b: [a + b + 0.01],
                                  threshold=0.0, atol=0.02, outputs_to_check=[0])


def test_reference_checks_fail_on_a_wrong_reference():
    op = core.CreateOperator("TuDoubleGood", ["X"], ["Y"])
    with pytest.raises(AssertionError, match="Output Y is not matching the reference"):
        testing.assertReferenceChecks(cpu, op, [x_of()], lambda x: (3 * x,))
    with pytest.raises(AssertionError):
        testing.assertReferenceChecks(cpu, op, [x_of()], lambda x: (2 * x, x))
    with pytest.raises(RuntimeError, match="wrong reference implementation"):
        testing.assertReferenceChecks(cpu, op, [x_of()], lambda x: 2 * x)
    with pytest.raises(ValueError, match="must supply an input for each input on the op"):
        testing.assertReferenceChecks(cpu, core.CreateOperator("Sum", ["X", "Z"], ["Y"]),
                                      [x_of()], lambda x: (x,))


def test_reference_checks_with_grad_reference():
    x = x_of()
    op = core.CreateOperator("TuDoubleGood", ["X"], ["Y"])

    def good(output_grad, outputs, inputs):
        # the fed output gradient is the forward output itself (as in Caffe2)
        np.testing.assert_allclose(output_grad, outputs[0])
        return [2 * output_grad]

    testing.assertReferenceChecks(cpu, op, [x], lambda x: (2 * x,), output_to_grad="Y",
                                  grad_reference=good)
    with pytest.raises(AssertionError, match="Gradient X_grad"):
        testing.assertReferenceChecks(cpu, op, [x], lambda x: (2 * x,), output_to_grad="Y",
                                      grad_reference=lambda g, o, i: [g])
    with pytest.raises(AssertionError, match="output_to_grad has to be set"):
        testing.assertReferenceChecks(cpu, op, [x], lambda x: (2 * x,), grad_reference=good)
    # an input without gradient must be referenced as None
    fill = core.CreateOperator("ConstantFill", ["X"], ["Y"], value=1.0)
    testing.assertReferenceChecks(cpu, fill, [x], lambda x: (np.ones_like(x),),
                                  output_to_grad="Y", grad_reference=lambda g, o, i: [None])
    with pytest.raises(AssertionError, match="has no gradient"):
        testing.assertReferenceChecks(cpu, fill, [x], lambda x: (np.ones_like(x),),
                                      output_to_grad="Y", grad_reference=lambda g, o, i: [g])


def test_failing_reference_check_restores_the_workspace():
    workspace.ResetWorkspace()
    workspace.FeedBlob("keep", np.zeros(1, np.float32))
    with pytest.raises(AssertionError):
        testing.assertReferenceChecks(cpu, core.CreateOperator("Copy", ["X"], ["Y"]),
                                      [x_of()], lambda x: (x + 1,))
    assert workspace.CurrentWorkspace() == "default"
    assert workspace.Blobs() == ["keep"]
    workspace.ResetWorkspace()


def test_device_checks():
    op = core.CreateOperator("Sum", ["X", "Z"], ["Y"])
    testing.assertDeviceChecks([cpu], op, [x_of(), x_of(seed=1)], [0])
    testing.assertDeviceChecks(testing.device_options[:1], op, [x_of(), x_of(seed=1)], 0)
    # two runs of a nondeterministic op disagree: the check must fail
    counter = core.CreateOperator("TuCounter", ["X"], ["Y"])
    with pytest.raises(AssertionError, match="Device check failed"):
        testing.assertDeviceChecks([cpu, cpu], counter, [x_of()], [0])
    assert workspace.CurrentWorkspace() == "default"


def test_run_op_raises():
    op = core.CreateOperator("Sum", ["X", "Z"], ["Y"])
    exc = testing.assertRunOpRaises(cpu, op, [x_of((2,)), x_of((3,))], exception=EnforceError,
                                    regexp="Sum: input Z")
    assert isinstance(exc, EnforceError)
    with pytest.raises(AssertionError, match="not raised"):
        testing.assertRunOpRaises(cpu, op, [x_of(), x_of()])
    with pytest.raises(AssertionError, match="does not match"):
        testing.assertRunOpRaises(cpu, op, [x_of((2,)), x_of((3,))], regexp="nothing like it")


def test_validation_checks():
    seen = {}

    def validator(X, Y):
        seen["ok"] = np.allclose(Y, 2 * X)

    testing.assertValidationChecks(cpu, core.CreateOperator("TuDoubleGood", ["X"], ["Y"]),
                                   [x_of()], validator)
    assert seen == {"ok": True}

    def lists(inputs, outputs):
        assert len(inputs) == 1 and len(outputs) == 1
        raise AssertionError("validator says no")

    with pytest.raises(AssertionError, match="validator says no"):
        testing.assertValidationChecks(cpu, core.CreateOperator("Copy", ["X"], ["Y"]),
                                       [x_of()], lists, as_kwargs=False)


# ---------------------------------------------------------------------------------------------
# net-level gradient checks
# ---------------------------------------------------------------------------------------------
def _net(name, middle):
    """L = middle(Copy(X)) + X; ``middle`` is an op type or "SumSelf" (A + A)."""
    net = core.Net(name)
    a = net.Copy(["X"], ["A"])
    b = net.Sum([a, a], ["B"]) if middle == "SumSelf" else getattr(net, middle)([a], ["B"])
    net.Sum([b, "X"], ["L"])
    return net


def test_net_gradient_checker_check():
    x = x_of((2, 3), dtype=np.float64)
    workspace.ResetWorkspace()
    workspace.FeedBlob("mine", np.ones(1))
    testing.NetGradientChecker.Check(_net("ngc_good", "TuDoubleGood"), ["L"], {"X": x}, "X")
    with pytest.raises(AssertionError, match="Error in gradient check"):
        testing.NetGradientChecker.Check(_net("ngc_bad", "TuDoubleBad"), ["L"], {"X": x}, "X")
    assert workspace.CurrentWorkspace() == "default" and workspace.Blobs() == ["mine"]
    workspace.ResetWorkspace()


def test_net_gradient_checker_compare_nets():
    x = x_of((2, 3))
    nets = [_net("cmp_a", "TuDoubleGood"), _net("cmp_b", "SumSelf")]
    testing.NetGradientChecker.CompareNets(nets, [["L"], ["L"]], [0], ["X"], {"X": x})
    nets = [_net("cmp_c", "TuDoubleGood"), _net("cmp_d", "TuDoubleBad")]
    with pytest.raises(AssertionError, match="Different gradients for input X"):
        testing.NetGradientChecker.CompareNets(nets, [["L"], ["L"]], [0], ["X"], {"X": x})
    nets = [_net("cmp_e", "TuDoubleGood"), _net("cmp_f", "Copy")]
    with pytest.raises(AssertionError, match="Different forward pass results"):
        testing.NetGradientChecker.CompareNets(nets, [["L"], ["L"]], [0], ["X"], {"X": x})


# ---------------------------------------------------------------------------------------------
# HypothesisTestCase and strategies
# ---------------------------------------------------------------------------------------------
class TestHypothesisTestCase(hu.HypothesisTestCase):
    def test_starts_with_an_empty_workspace(self):
        self.assertEqual(workspace.Blobs(), [])
        workspace.FeedBlob("leftover", np.ones(1))

    def test_starts_with_an_empty_workspace_again(self):
        self.assertEqual(workspace.Blobs(), [])
        workspace.FeedBlob("leftover", np.ones(1))

    @given(x=hu.tensor(max_dim=3, max_value=4), **hu.gcs_cpu_only)
    @settings(max_examples=8, deadline=None)
    def test_checks_as_methods(self, x, gc, dc):
        op = core.CreateOperator("TuDoubleGood", ["X"], ["Y"])
        self.assertReferenceChecks(gc, op, [x], lambda x: (2 * x,))
        self.assertDeviceChecks(dc, op, [x], [0])
        self.assertGradientChecks(gc, op, [x], 0, [0])
        self.assertValidationChecks(gc, op, [x], lambda X, Y: None)

    def test_methods_fail_too(self):
        with self.assertRaises(AssertionError):
            self.assertGradientChecks(cpu, core.CreateOperator("TuDoubleBad", ["X"], ["Y"]),
                                      [x_of()], 0, [0])
        self.assertRunOpRaises(cpu, core.CreateOperator("Sum", ["X", "Z"], ["Y"]),
                               [x_of((2,)), x_of((3,))], regexp="Sum")


@given(a=hu.arrays([3, 2]), i=hu.arrays([5], dtype=np.int32),
       d=hu.arrays([4], dtype=np.float64))
@settings(max_examples=20, deadline=None)
def test_arrays_defaults(a, i, d):
    assert a.dtype == np.float32 and a.shape == (3, 2) and np.all(np.abs(a) <= 1)
    assert i.dtype == np.int32 and np.all(i >= 0)
    assert d.dtype == np.float64 and np.all(np.abs(d) <= 1)


@given(t=hu.tensor(min_dim=2, max_dim=3, max_value=4), ts=hu.tensors(n=3, max_dim=2),
       t1=hu.tensor1d(max_len=7))
@settings(max_examples=20, deadline=None)
def test_tensor_strategies(t, ts, t1):
    assert 2 <= t.ndim <= 3 and all(1 <= d <= 4 for d in t.shape)
    assert len(ts) == 3 and len({x.shape for x in ts}) == 1
    assert t1.ndim == 1 and 1 <= t1.size <= 7


@given(data=st.data(), size=st.integers(0, 12))
@settings(max_examples=30, deadline=None)
def test_lengths_strategy(data, size):
    lengths = data.draw(hu.lengths(size))
    assert lengths.dtype == np.int32 and lengths.sum() == size and np.all(lengths >= 0)
    if size:
        assert len(lengths) >= 1
    some = data.draw(hu.lengths(size, min_segments=2, max_segments=3)) if size else None
    assert some is None or (2 <= len(some) <= 3 and some.sum() == size)


def test_device_lists_and_gcs():
    assert testing.device_options[0] == testing.cpu_do
    assert testing.gpu_do.device_type == 1
    assert len(testing.device_options) == 1 + int(workspace.has_gpu_support())
    assert set(hu.gcs) == set(hu.gcs_cpu_only) == set(hu.gcs_gpu_only) == {"gc", "dc"}


def test_profiles_registered_but_not_loaded_on_import():
    assert settings.get_profile("dev").max_examples == 10
    assert settings.get_profile("sandcastle").max_examples == 100
    assert settings.get_profile("sandcastle").derandomize
    assert settings.get_profile("debug").max_examples == 1000
    code = ("from hypothesis import settings; before = settings.default.max_examples; "
            "import c2lite.testing; print(before, settings.default.max_examples)")
    env = {k: v for k, v in os.environ.items() if k != "CAFFE2_HYPOTHESIS_PROFILE"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[0] == out[1]
    env["CAFFE2_HYPOTHESIS_PROFILE"] = "debug"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[1] == "1000"
