"""OpSchema.verify rules, per-device registries, engines and CreateOperator."""
import numpy as np
import pytest

import c2lite
from c2lite import core, registry
from c2lite.errors import DeviceError, EnforceError, SchemaError
from c2lite.operator import Operator, UnsupportedOperatorFeature
from c2lite.registry import create_operator, register_cpu, register_cuda
from c2lite.schema import OPERATOR_SCHEMA, OpSchema, get_schema


def op(type_, ins, outs, **kw):
    return core.CreateOperator(type_, ins, outs, **kw)


def test_verify_rules_in_order():
    s = (OpSchema("T").NumInputs(1, 2).NumOutputs({1, 3}).AllowInplace({(0, 0)})
         .EnforceInplace({(1, 1)}).Arg("k", required=True))
    assert "Input size 0 not in range" in s.verify(op("T", [], ["y"]))
    assert "Output size 2 not in" in s.verify(op("T", ["x"], ["a", "b"]))
    assert "required" in s.verify(op("T", ["x"], ["y"]))
    assert s.verify(op("T", ["x"], ["x"], k=1)) is None  # allowed in-place
    assert "not supported by op T" in s.verify(op("T", ["x"], ["a", "x", "c"], k=1))
    assert "not in-place but should be" in s.verify(op("T", ["x", "z"], ["x", "w", "v"], k=1))
    assert s.verify(op("T", ["x", "z"], ["x", "z", "v"], k=1)) is None
    calc = OpSchema("U").OutputCalculator(lambda n: n + 1)
    assert "not matching expected output size" in calc.verify(op("U", ["a"], ["b"]))
    assert calc.verify(op("U", ["a"], ["b", "c"])) is None
    pred = OpSchema("V").NumInputs(lambda n: n % 2 == 0)
    assert "not in allowed input sizes" in pred.verify(op("V", ["a"], []))
    both = OpSchema("W").NumInputsOutputs(lambda i, o: i == o)
    assert "Combination" in both.verify(op("W", ["a"], []))


def test_duplicate_schema_and_kernel_without_schema_refused():
    OPERATOR_SCHEMA("DupSchemaTest")
    with pytest.raises(EnforceError, match="twice"):
        OPERATOR_SCHEMA("DupSchemaTest")
    with pytest.raises(EnforceError, match="has no schema"):
        register_cpu("NoSchemaKernelTest")(Operator)


def test_schema_failure_raises_schema_error_before_creation():
    ws = c2lite.Workspace()
    ws.feed_blob("a", np.ones(2, dtype=np.float32))
    with pytest.raises(SchemaError, match="Operator def did not pass schema checking: Input "
                                          "size 2 not in range"):
        create_operator(op("Copy", ["a", "a"], ["b"]), ws)
    assert not ws.has_blob("b")


def test_inputs_must_exist_at_construction():
    ws = c2lite.Workspace()
    with pytest.raises(EnforceError, match="op Copy: Encountered a non-existing input blob: ghost"):
        create_operator(op("Copy", ["ghost"], ["b"]), ws)


OPERATOR_SCHEMA("EngineProbe").NumInputs(0).NumOutputs(1)


@register_cpu("EngineProbe")
class _DefaultProbe(Operator):
    def compute(self):
        return np.array([0])


@register_cpu("EngineProbe", engine="FAST")
class _FastProbe(Operator):
    def compute(self):
        return np.array([1])


@register_cpu("EngineProbe", engine="PICKY")
class _PickyProbe(Operator):
    def setup(self):
        raise UnsupportedOperatorFeature("never")

    def compute(self):  # pragma: no cover
        return np.array([2])


@register_cuda("EngineProbe")
class _CudaProbe(Operator):
    def compute(self):  # pragma: no cover - no GPU in CI
        return np.array([3])


def _probe(ws, **kw):
    built = create_operator(op("EngineProbe", [], ["y"], **kw), ws)
    built.run()
    return int(ws.fetch_blob("y")[0]), built.engine


def test_engines_fallback_and_preferences():
    ws = c2lite.Workspace()
    assert _probe(ws) == (0, "")
    assert _probe(ws, engine="FAST") == (1, "FAST")
    assert _probe(ws, engine="PICKY,FAST") == (1, "FAST")  # unsupported -> next engine
    assert _probe(ws, engine="PICKY") == (0, "")  # falls back to the default, same device
    assert _probe(ws, engine="NOPE") == (0, "")
    try:
        core.SetEnginePref({0: {"EngineProbe": ["FAST"]}}, {})
        assert _probe(ws) == (1, "FAST")
        core.SetEnginePref({}, {0: ["FAST"]})
        assert _probe(ws) == (1, "FAST")
    finally:
        core.SetEnginePref({}, {1: ["CUDNN"]})
    assert registry.op_registry_key("Conv", "CUDNN") == "Conv_ENGINE_CUDNN"
    assert registry.op_registry_key("Conv", "DEFAULT") == "Conv"
    assert registry.engines_of("EngineProbe", 0) == ["", "FAST", "PICKY"]
    assert core.IsOperatorWithEngine("EngineProbe", "FAST")


def test_device_selection_op_then_net_then_cpu():
    net_opt = core.DeviceOption(1, 0)
    plain = op("Copy", ["a"], ["b"])
    assert registry.resolve_device(plain).type == 0
    assert registry.resolve_device(plain, net_opt).type == 1
    own = op("Copy", ["a"], ["b"], device_option=core.DeviceOption(0))
    assert registry.resolve_device(own, net_opt).type == 0


def test_no_cross_device_fallback_and_errors():
    ws = c2lite.Workspace()
    ws.feed_blob("a", np.ones(2, dtype=np.float32))
    cuda_op = op("Iter", [], ["it"], device_option=core.DeviceOption(1))
    with pytest.raises(DeviceError, match="Cannot create operator of type 'Iter' on the device "
                                          "'CUDA'. Verify that implementation for the "
                                          "corresponding device exist."):
        create_operator(cuda_op, ws)
    odd = op("Sum", ["a"], ["b"], device_option=core.DeviceOption(7))
    with pytest.raises(DeviceError, match="Device type 7 not registered."):
        create_operator(odd, ws)
    with pytest.raises(DeviceError, match="did you mean: Sum"):
        create_operator(op("Summ", ["a"], ["b"]), ws)


def test_cuda_registered_op_without_gpu_is_a_clear_error():
    if c2lite.workspace.has_gpu_support():
        pytest.skip("a GPU is present")
    ws = c2lite.Workspace()
    with pytest.raises(DeviceError, match="not available"):
        create_operator(op("EngineProbe", [], ["y"], device_option=core.DeviceOption(1)), ws)


def test_registered_operators_union_and_isoperator():
    keys = registry.registered_operators()
    assert {"Sum", "Copy", "ConstantFill", "EngineProbe_ENGINE_FAST"} <= keys
    assert "EngineProbe" in registry.registered_operators(1)
    assert core.IsOperator("EngineProbe") and not core.IsOperator("NoSuchOpAnywhere")
    assert get_schema("Sum").describe().startswith("Sum: inputs [1, inf]")


def test_argument_accessors():
    ws = c2lite.Workspace()
    built = create_operator(op("ConstantFill", [], ["y"], shape=[2, 3], value=1.5,
                               dtype=1, name_arg="abc"), ws)
    assert built.arg("value", 0.0) == 1.5
    assert built.arg("dtype", 0) == 1 and built.arg("missing", 7) == 7
    assert built.repeated_arg("shape") == [2, 3]
    assert built.arg("name_arg", "") == "abc"
    with pytest.raises(EnforceError, match="not a int"):
        built.arg("value", 0)
    with pytest.raises(EnforceError, match="required"):
        built.arg("missing")


def test_cross_device_input_is_refused_naming_both():
    class FakeGpuArray:
        """Looks like a CuPy array on device 0."""
        __module__ = "cupy._core.core"

        class device:  # noqa: N801
            id = 0

    FakeGpuArray.__module__ = "cupy._core.core"
    ws = c2lite.Workspace()
    ws.set_blob("g", FakeGpuArray())
    built = create_operator(op("Copy", ["g"], ["h"]), ws)
    with pytest.raises(EnforceError, match=r"Copy runs on CPU but input blob g is on CUDA:0"):
        built.run()
    assert ws.get_blob("h") is None
