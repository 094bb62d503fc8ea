"""OpSchema: what an operator type accepts, declared once and checked before the op is built.

Builder methods keep Caffe2's names (``NumInputs``, ``AllowInplace``, ``Arg``...) so a schema reads
like the C++ ``OPERATOR_SCHEMA`` block it replaces. ``verify`` applies Caffe2's rules in order.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence, Union

from c2lite.errors import EnforceError

INT_MAX = 2**31 - 1

#: (dims or None when unknown, numpy dtype string or None) for one blob in shape inference.
ShapeInfo = tuple
PairSet = Union[Iterable[tuple], Callable[[int, int], bool]]


def _pair_predicate(spec: PairSet) -> Callable[[int, int], bool]:
    if callable(spec):
        return spec
    pairs = set(spec)
    return lambda i, o: (i, o) in pairs


class OpSchema:
    """The declaration of one operator type."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.min_input, self.max_input = 0, INT_MAX
        self.min_output, self.max_output = 0, INT_MAX
        self.num_inputs_allowed: Callable[[int], bool] = lambda n: True
        self.num_outputs_allowed: Callable[[int], bool] = lambda n: True
        self.num_inputs_outputs_allowed: Callable[[int, int], bool] = lambda i, o: True
        self.output_calculator: Optional[Callable[[int], int]] = None
        self.inplace_allowed: Callable[[int, int], bool] = lambda i, o: False
        self.inplace_enforced: Callable[[int, int], bool] = lambda i, o: False
        self.inference: Optional[Callable[[Any, list], list]] = None
        self.inputs_can_cross_devices = False
        self.private = False
        self.doc = ""
        self.arg_docs: list[tuple[str, str, bool]] = []
        self.input_docs: dict[int, tuple[str, str]] = {}
        self.output_docs: dict[int, tuple[str, str]] = {}

    # -- counts -----------------------------------------------------------------------------
    def NumInputs(self, *spec: Any) -> "OpSchema":
        """n, (min, max), a set of allowed counts, or a predicate."""
        self.min_input, self.max_input, self.num_inputs_allowed = _count_spec(spec)
        return self

    def NumOutputs(self, *spec: Any) -> "OpSchema":
        self.min_output, self.max_output, self.num_outputs_allowed = _count_spec(spec)
        return self

    def NumInputsOutputs(self, fn: Callable[[int, int], bool]) -> "OpSchema":
        self.num_inputs_outputs_allowed = fn
        return self

    def OutputCalculator(self, fn: Callable[[int], int]) -> "OpSchema":
        self.output_calculator = fn
        return self

    def SameNumberOfOutput(self) -> "OpSchema":
        return self.OutputCalculator(lambda n: n)

    # -- in-place ---------------------------------------------------------------------------
    def AllowInplace(self, spec: PairSet) -> "OpSchema":
        self.inplace_allowed = _pair_predicate(spec)
        return self

    def AllowOneToOneInplace(self) -> "OpSchema":
        return self.AllowInplace(lambda i, o: i == o)

    def EnforceInplace(self, spec: PairSet) -> "OpSchema":
        self.inplace_enforced = _pair_predicate(spec)
        return self

    def EnforceOneToOneInplace(self) -> "OpSchema":
        return self.EnforceInplace(lambda i, o: i == o)

    # -- inference and placement ------------------------------------------------------------
    def TensorInferenceFunction(self, fn: Callable[[Any, list], list]) -> "OpSchema":
        """fn(op_def, [ShapeInfo per input]) -> [ShapeInfo per output]."""
        self.inference = fn
        return self

    def IdenticalTypeAndShape(self) -> "OpSchema":
        return self.TensorInferenceFunction(lambda op, ins: list(ins[: len(op.output)]))

    def IdenticalTypeAndShapeOfInput(self, idx: int) -> "OpSchema":
        return self.TensorInferenceFunction(lambda op, ins: [ins[idx]] * len(op.output))

    def ScalarType(self, dtype: str) -> "OpSchema":
        return self.TensorInferenceFunction(lambda op, ins: [((), dtype)] * len(op.output))

    def InputsCanCrossDevices(self) -> "OpSchema":
        self.inputs_can_cross_devices = True
        return self

    def Private(self) -> "OpSchema":
        self.private = True
        return self

    # -- documentation ----------------------------------------------------------------------
    def SetDoc(self, doc: str) -> "OpSchema":
        self.doc = doc.strip()
        return self

    def Arg(self, name: str, desc: str = "", required: bool = False) -> "OpSchema":
        self.arg_docs.append((name, desc, required))
        return self

    def Input(self, idx: int, name: str, desc: str = "") -> "OpSchema":
        self.input_docs[idx] = (name, desc)
        return self

    def Output(self, idx: int, name: str, desc: str = "") -> "OpSchema":
        self.output_docs[idx] = (name, desc)
        return self

    # -- checking ---------------------------------------------------------------------------
    def verify(self, op_def: Any) -> Optional[str]:
        """None if ``op_def`` passes, else the first violated rule (Caffe2's order)."""
        n_in, n_out = len(op_def.input), len(op_def.output)
        if not self.min_input <= n_in <= self.max_input:
            return (f"Input size {n_in} not in range [min={self.min_input}, "
                    f"max={self.max_input}].")
        if not self.num_inputs_allowed(n_in):
            return f"Input size {n_in} not in allowed input sizes."
        if not self.min_output <= n_out <= self.max_output:
            return (f"Output size {n_out} not in range [min={self.min_output}, "
                    f"max={self.max_output}].")
        if not self.num_outputs_allowed(n_out):
            return f"Output size {n_out} not in allowed output sizes."
        if not self.num_inputs_outputs_allowed(n_in, n_out):
            return f"Combination of input size {n_in} and output size {n_out} not allowed."
        if self.output_calculator is not None:
            expected = self.output_calculator(n_in)
            if expected != -1 and expected != n_out:
                return (f"Output size {n_out} not matching expected output size, "
                        f"which is {expected}")
        for i, in_name in enumerate(op_def.input):
            for o, out_name in enumerate(op_def.output):
                if in_name == out_name and not (self.inplace_allowed(i, o)
                                                or self.inplace_enforced(i, o)):
                    return (f"Input index {i} and output idx {o} ({in_name}) "
                            "are set to be in-place but this is actually not "
                            "supported by op " + self.name)
                if self.inplace_enforced(i, o) and in_name != out_name:
                    return (f"Input index {i} ({in_name}) and output idx {o} ({out_name}) "
                            f"are not in-place but should be as required by op {self.name}")
        present = {a.name for a in op_def.arg}
        for name, _, required in self.arg_docs:
            if required and name not in present:
                return f"Argument '{name}' is required for Operator '{self.name}'."
        return None

    def Verify(self, op_def: Any) -> bool:
        return self.verify(op_def) is None

    def infer(self, op_def: Any, inputs: Sequence[ShapeInfo]) -> list:
        """Output ShapeInfos; unknown ((None, None)) without an inference function."""
        if self.inference is None:
            return [(None, None)] * len(op_def.output)
        return list(self.inference(op_def, list(inputs)))

    def describe(self) -> str:
        """Human-readable summary used by ``c2lite ops NAME``."""
        hi_in = "inf" if self.max_input == INT_MAX else self.max_input
        hi_out = "inf" if self.max_output == INT_MAX else self.max_output
        lines = [f"{self.name}: inputs [{self.min_input}, {hi_in}], "
                 f"outputs [{self.min_output}, {hi_out}]"]
        if self.doc:
            lines.append("  " + self.doc.splitlines()[0])
        for idx, (name, desc) in sorted(self.input_docs.items()):
            lines.append(f"  input {idx} {name}: {desc}")
        for idx, (name, desc) in sorted(self.output_docs.items()):
            lines.append(f"  output {idx} {name}: {desc}")
        for name, desc, required in self.arg_docs:
            lines.append(f"  arg {name}{' (required)' if required else ''}: {desc}")
        return "\n".join(lines)


def _count_spec(spec: tuple) -> tuple:
    """(min, max, predicate) from NumInputs/NumOutputs arguments."""
    if len(spec) == 2:
        return spec[0], spec[1], lambda n: True
    (one,) = spec
    if callable(one):
        return 0, INT_MAX, one
    if isinstance(one, (set, frozenset, list, tuple)):
        allowed = frozenset(one)
        return min(allowed), max(allowed), allowed.__contains__
    return one, one, lambda n: True


_SCHEMAS: dict[str, OpSchema] = {}


def OPERATOR_SCHEMA(name: str) -> OpSchema:
    """Declare the schema of ``name``; declaring one twice is an error (Caffe2 aborted)."""
    if name in _SCHEMAS:
        raise EnforceError(f"Trying to register schema for operator {name} twice")
    schema = _SCHEMAS[name] = OpSchema(name)
    return schema


def get_schema(name: str) -> Optional[OpSchema]:
    return _SCHEMAS.get(name)


def schemas() -> dict[str, OpSchema]:
    return dict(_SCHEMAS)
