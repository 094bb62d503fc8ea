"""Kernels of the training ops: FC, Relu, Sigmoid, AveragedLoss, WeightedSum, Scale, Iter.

Forward results are compared with element-by-element Python references written here;
gradients go through the registered makers and gradient kernels and are compared with
central differences in float64; bad shapes and dtypes must raise EnforceError naming the blob.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import c2lite  # noqa: F401  (registers the ops)
from c2lite import core
from c2lite.errors import EnforceError, SchemaError
from c2lite.gradient import GradientRegistry
from c2lite.workspace import Workspace

FLOATS = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


# -- helpers -----------------------------------------------------------------------------------
def run_op(op_type, inputs, outputs, ws=None, **args):
    """Feed ``inputs`` ({name: array}), run one op, return the fetched outputs (a list)."""
    ws = ws or Workspace()
    for name, value in inputs.items():
        ws.feed_blob(name, value)
    ws.run_operator_once(core.CreateOperator(op_type, list(inputs), outputs, **args))
    return [ws.fetch_blob(o) for o in outputs]


def forward_loss(op_def, feeds, dy):
    """sum(Y * dY) for output 0 of ``op_def`` run on ``feeds``."""
    ws = Workspace()
    for name, value in feeds.items():
        ws.feed_blob(name, value)
    ws.run_operator_once(op_def)
    return float(np.sum(ws.fetch_blob(op_def.output[0]) * dy))


def check_gradient(op_def, feeds, wrt, eps=1e-6, rtol=1e-6, atol=1e-8, seed=0):
    """Analytic input gradients (maker + gradient kernel) against central differences.

    ``feeds`` are float64; the loss is sum(Y * dY) for a random dY, so dX = ∂loss/∂X."""
    ws = Workspace()
    for name, value in feeds.items():
        ws.feed_blob(name, value)
    ws.run_operator_once(op_def)
    y = ws.fetch_blob(op_def.output[0])
    dy = np.random.default_rng(seed).standard_normal(y.shape)
    g_output = [op_def.output[0] + "_grad"] + [None] * (len(op_def.output) - 1)
    grad_ops, g_input = GradientRegistry.GetGradientForOp(op_def, g_output)
    ws.feed_blob(g_output[0], dy)
    for g in grad_ops:
        ws.run_operator_once(g)
    for idx in wrt:
        name = op_def.input[idx]
        analytic = ws.fetch_blob(g_input[idx])
        x = feeds[name]
        numeric = np.zeros_like(x)
        for pos in np.ndindex(x.shape):
            plus, minus = x.copy(), x.copy()
            plus[pos] += eps
            minus[pos] -= eps
            numeric[pos] = (forward_loss(op_def, {**feeds, name: plus}, dy)
                            - forward_loss(op_def, {**feeds, name: minus}, dy)) / (2 * eps)
        assert analytic.shape == x.shape, (name, analytic.shape, x.shape)
        np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol, err_msg=name)


def raises_on_blob(blob, fn, match=None):
    with pytest.raises(EnforceError, match=match) as info:
        fn()
    assert info.value.blob == blob, (info.value.blob, str(info.value))
    return info.value


def rand(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


seeds = st.integers(0, 2**31 - 1)


# -- FC ----------------------------------------------------------------------------------------
def fc_reference(x, w, b, axis, axis_w, transposed):
    """Y[m, n] = Σ_k X[m, k] W[n, k] + b[n] with plain Python loops."""
    axis %= x.ndim
    axis_w %= w.ndim
    m = int(np.prod(x.shape[:axis], dtype=np.int64))
    k = int(np.prod(x.shape[axis:], dtype=np.int64))
    xf = x.reshape(m, k).tolist()
    lead = int(np.prod(w.shape[:axis_w], dtype=np.int64))
    wf = w.reshape(lead, -1).tolist()
    n = len(wf[0]) if transposed else lead
    out = np.empty((m, n), dtype=np.float64)
    for i in range(m):
        for j in range(n):
            acc = float(b[j])
            for kk in range(k):
                acc += xf[i][kk] * (wf[kk][j] if transposed else wf[j][kk])
            out[i, j] = acc
    return out.reshape(x.shape[:axis] + (n,))


@st.composite
def fc_case(draw):
    lead = draw(st.lists(st.integers(1, 3), min_size=1, max_size=2))
    tail = draw(st.lists(st.integers(1, 3), min_size=1, max_size=2))
    n_dims = draw(st.lists(st.integers(1, 3), min_size=1, max_size=2))
    axis = len(lead) if draw(st.booleans()) else len(lead) - len(lead + tail)
    return lead, tail, n_dims, axis, draw(st.booleans()), draw(st.sampled_from(FLOATS)), \
        draw(seeds)


@settings(max_examples=40)
@given(fc_case())
def test_fc_matches_loop_reference(case):
    lead, tail, n_dims, axis, transposed, dtype, seed = case
    rng = np.random.default_rng(seed)
    x = rand(rng, lead + tail, dtype)
    n = int(np.prod(n_dims))
    # W split at axis_w into the N dims and the K dims (K dims first when transposed)
    w_shape = (tail + n_dims) if transposed else (n_dims + tail)
    axis_w = len(tail) if transposed else len(n_dims)
    w = rand(rng, w_shape, dtype)
    b = rand(rng, (n,), dtype)
    op_type = "FCTransposed" if transposed else "FC"
    (y,) = run_op(op_type, {"X": x, "W": w, "b": b}, ["Y"], axis=axis, axis_w=axis_w)
    assert y.dtype == dtype and y.shape == tuple(lead) + (n,)
    expected = fc_reference(x.astype(np.float64), w.astype(np.float64), b, axis, axis_w,
                            transposed)
    np.testing.assert_allclose(y, expected, **TOL[dtype])


@settings(max_examples=30)
@given(fc_case(), st.booleans())
def test_fc_gradient_kernel_matches_loop_reference(case, with_dx):
    lead, tail, n_dims, axis, transposed, dtype, seed = case
    rng = np.random.default_rng(seed)
    m, k, n = int(np.prod(lead)), int(np.prod(tail)), int(np.prod(n_dims))
    x = rand(rng, lead + tail, dtype)
    w_shape = (tail + n_dims) if transposed else (n_dims + tail)
    axis_w = len(tail) if transposed else len(n_dims)
    w = rand(rng, w_shape, dtype)
    dy = rand(rng, tuple(lead) + (n,), dtype)
    outs = ["dW", "db"] + (["dX"] if with_dx else [])
    op_type = ("FCTransposed" if transposed else "FC") + "Gradient"
    got = run_op(op_type, {"X": x, "W": w, "dY": dy}, outs, axis=axis, axis_w=axis_w)
    xm, dym = x.reshape(m, k).tolist(), dy.reshape(m, n).tolist()
    wm = w.reshape(k, n) if transposed else w.reshape(n, k)
    dw = np.zeros((n, k))
    dx = np.zeros((m, k))
    for i in range(m):
        for j in range(n):
            for kk in range(k):
                dw[j, kk] += dym[i][j] * xm[i][kk]
                dx[i, kk] += dym[i][j] * float(wm[kk, j] if transposed else wm[j, kk])
    db = [math.fsum(dym[i][j] for i in range(m)) for j in range(n)]
    np.testing.assert_allclose(got[0], (dw.T if transposed else dw).reshape(w.shape),
                               **TOL[dtype])
    np.testing.assert_allclose(got[1], db, **TOL[dtype])
    assert got[0].shape == w.shape and got[1].shape == (n,)
    if with_dx:
        assert got[2].shape == x.shape
        np.testing.assert_allclose(got[2], dx.reshape(x.shape), **TOL[dtype])


@pytest.mark.parametrize("op_type", ["FC", "FCTransposed"])
@pytest.mark.parametrize("axis,axis_w", [(1, 1), (2, 1), (-1, 1)])
def test_fc_numeric_gradient(op_type, axis, axis_w):
    rng = np.random.default_rng(3)
    x = rand(rng, (2, 3, 2))
    k = int(np.prod(x.shape[axis % 3:]))
    w = rand(rng, (k, 3) if op_type == "FCTransposed" else (3, k))
    b = rand(rng, (3,))
    op = core.CreateOperator(op_type, ["X", "W", "b"], ["Y"], axis=axis, axis_w=axis_w)
    check_gradient(op, {"X": x, "W": w, "b": b}, wrt=[0, 1, 2])


def test_fc_empty_batch():
    x = np.zeros((0, 4), np.float32)
    w = np.ones((3, 4), np.float32)
    (y,) = run_op("FC", {"X": x, "W": w, "b": np.ones(3, np.float32)}, ["Y"])
    assert y.shape == (0, 3)
    dw, db, dx = run_op("FCGradient", {"X": x, "W": w, "dY": np.zeros((0, 3), np.float32)},
                        ["dW", "db", "dX"])
    assert (dw == 0).all() and dw.shape == (3, 4) and (db == 0).all() and dx.shape == (0, 4)


def test_fc_errors_name_the_blob():
    x = np.ones((2, 4), np.float32)
    w = np.ones((3, 4), np.float32)
    b = np.ones(3, np.float32)
    raises_on_blob("W", lambda: run_op("FC", {"X": x, "W": np.ones((3, 5), np.float32), "b": b},
                                       ["Y"]), match="K=4.*K=5")
    raises_on_blob("b", lambda: run_op("FC", {"X": x, "W": w, "b": np.ones(4, np.float32)},
                                       ["Y"]), match="N=3")
    raises_on_blob("b", lambda: run_op("FC", {"X": x, "W": w, "b": np.ones((1, 3), np.float32)},
                                       ["Y"]), match="1-D")
    raises_on_blob("X", lambda: run_op("FC", {"X": x.astype(np.int32), "W": w, "b": b}, ["Y"]),
                   match="int32")
    raises_on_blob("W", lambda: run_op("FC", {"X": x, "W": w.astype(np.float64), "b": b},
                                       ["Y"]), match="float64")
    raises_on_blob("X", lambda: run_op("FC", {"X": x, "W": w, "b": b}, ["Y"], axis=2),
                   match="axis 2 is out of range")
    raises_on_blob("W", lambda: run_op("FC", {"X": x, "W": w, "b": b}, ["Y"], axis_w=-3),
                   match="axis_w")
    raises_on_blob("dY", lambda: run_op("FCGradient", {"X": x, "W": w,
                                                       "dY": np.ones((2, 4), np.float32)},
                                        ["dW", "db"]), match="M=2 x N=3")
    with pytest.raises(SchemaError):
        run_op("FC", {"X": x, "W": w}, ["Y"])
    with pytest.raises(SchemaError):
        run_op("FCGradient", {"X": x, "W": w, "dY": np.ones((2, 3), np.float32)}, ["dW"])


def test_fc_shape_inference():
    from c2lite.schema import get_schema
    op = core.CreateOperator("FC", ["X", "W", "b"], ["Y"], axis=2)
    assert get_schema("FC").infer(op, [((2, 3, 4, 5), "float32"), ((7, 20), "float32"),
                                       ((7,), "float32")]) == [((2, 3, 7), "float32")]
    op = core.CreateOperator("FCTransposedGradient", ["X", "W", "dY"], ["dW", "db", "dX"])
    assert get_schema("FCTransposedGradient").infer(
        op, [((2, 4), "float32"), ((4, 6), "float32"), ((2, 6), "float32")]) == [
        ((4, 6), "float32"), ((6,), "float32"), ((2, 4), "float32")]


# -- Relu / Sigmoid --------------------------------------------------------------------------
def _sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))


@settings(max_examples=30)
@given(st.lists(st.integers(0, 4), min_size=0, max_size=3), st.sampled_from(FLOATS), seeds)
def test_relu_sigmoid_forward_and_gradient_kernels(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    x = (rand(rng, shape, dtype) * 30).astype(dtype)  # reaches the saturated sigmoid range
    dy = rand(rng, shape, dtype)
    (y,) = run_op("Relu", {"X": x}, ["Y"])
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_array_equal(y, np.array([v if v > 0 else 0.0 for v in x.ravel()],
                                              dtype=dtype).reshape(x.shape))
    (dx,) = run_op("ReluGradient", {"Y": y, "dY": dy}, ["dX"])
    np.testing.assert_array_equal(dx, np.array([g if v > 0 else 0.0 for v, g in
                                                zip(y.ravel(), dy.ravel())],
                                               dtype=dtype).reshape(x.shape))
    with np.errstate(all="raise"):  # the kernel must not overflow for large |x|
        (s,) = run_op("Sigmoid", {"X": x}, ["S"])
    assert s.dtype == dtype
    np.testing.assert_allclose(s, np.array([_sigmoid(float(v)) for v in x.ravel()])
                               .reshape(x.shape), **TOL[dtype])
    (ds,) = run_op("SigmoidGradient", {"Y": s, "dY": dy}, ["dX"])
    ref = np.array([float(g) * float(v) * (1 - float(v)) for v, g in zip(s.ravel(), dy.ravel())])
    np.testing.assert_allclose(ds, ref.reshape(x.shape), **TOL[dtype])


def test_relu_sigmoid_numeric_gradient():
    rng = np.random.default_rng(5)
    x = rand(rng, (3, 4))
    x[np.abs(x) < 1e-2] = 0.5  # keep away from Relu's kink
    for op_type in ["Relu", "Sigmoid"]:
        check_gradient(core.CreateOperator(op_type, ["X"], ["Y"]), {"X": x}, wrt=[0])


def test_activation_in_place_forward_and_backward():
    ws = Workspace()
    x = np.array([-1.0, 2.0, -3.0, 4.0], np.float32)
    ws.feed_blob("X", x)
    ws.run_operator_once(core.CreateOperator("Relu", ["X"], ["X"]))
    np.testing.assert_array_equal(ws.fetch_blob("X"), [0, 2, 0, 4])
    ws.feed_blob("X_grad", np.ones(4, np.float32))
    ws.run_operator_once(core.CreateOperator("ReluGradient", ["X", "X_grad"], ["X_grad"]))
    np.testing.assert_array_equal(ws.fetch_blob("X_grad"), [0, 1, 0, 1])
    with pytest.raises(SchemaError, match="in-place"):
        ws.run_operator_once(core.CreateOperator("ReluGradient", ["X", "X_grad"], ["X"]))
    ws.run_operator_once(core.CreateOperator("Sigmoid", ["X"], ["X"]))
    np.testing.assert_allclose(ws.fetch_blob("X"), [0.5, 1 / (1 + np.exp(-2.0)), 0.5,
                                                    1 / (1 + np.exp(-4.0))], rtol=1e-6)


def test_activation_errors_name_the_blob():
    raises_on_blob("X", lambda: run_op("Relu", {"X": np.arange(3)}, ["Y"]), match="int64")
    raises_on_blob("X", lambda: run_op("Sigmoid", {"X": np.arange(3)}, ["Y"]), match="int64")
    raises_on_blob("dY", lambda: run_op("ReluGradient", {"Y": np.ones(3, np.float32),
                                                         "dY": np.ones(4, np.float32)}, ["dX"]),
                   match=r"\[4\].*\[3\]")
    raises_on_blob("dY", lambda: run_op("SigmoidGradient", {"Y": np.ones(3, np.float32),
                                                            "dY": np.ones(3)}, ["dX"]),
                   match="float64")


def test_inputs_are_never_mutated():
    rng = np.random.default_rng(0)
    feeds = {"X": rand(rng, (3, 4)), "W": rand(rng, (2, 4)), "b": rand(rng, (2,))}
    ws = Workspace()
    for k, v in feeds.items():
        ws.feed_blob(k, v)
    ws.feed_blob("dY", rand(rng, (3, 2)))
    ws.feed_blob("one", np.ones(1))
    before = {k: ws.fetch_blob(k).copy() for k in ["X", "W", "b", "dY", "one"]}
    for op in [core.CreateOperator("FC", ["X", "W", "b"], ["Y"]),
               core.CreateOperator("FCGradient", ["X", "W", "dY"], ["a", "b2", "c"]),
               core.CreateOperator("Relu", ["X"], ["R"]),
               core.CreateOperator("Sigmoid", ["X"], ["S"]),
               core.CreateOperator("Scale", ["X"], ["Sc"], scale=3.0),
               core.CreateOperator("AveragedLoss", ["X"], ["L"]),
               core.CreateOperator("WeightedSum", ["X", "one", "X", "one"], ["WS"])]:
        ws.run_operator_once(op)
    for k, v in before.items():
        np.testing.assert_array_equal(ws.fetch_blob(k), v, err_msg=k)


# -- AveragedLoss -----------------------------------------------------------------------------
@settings(max_examples=30)
@given(st.lists(st.integers(0, 5), min_size=0, max_size=3), st.sampled_from(FLOATS), seeds)
def test_averaged_loss_and_gradient(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rand(rng, shape, dtype)
    (loss,) = run_op("AveragedLoss", {"X": x}, ["L"])
    assert loss.shape == () and loss.dtype == dtype
    expected = math.fsum(float(v) for v in x.ravel()) / x.size if x.size else 0.0
    np.testing.assert_allclose(loss, expected, **TOL[dtype])
    g = float(rng.standard_normal())
    for dy in [np.array(g, dtype), np.array([g], dtype)]:
        (dx,) = run_op("AveragedLossGradient", {"X": x, "dY": dy}, ["dX"])
        assert dx.shape == x.shape and dx.dtype == dtype
        if x.size:
            np.testing.assert_allclose(dx, np.full(x.shape, g / x.size), **TOL[dtype])


def test_averaged_loss_numeric_gradient_and_errors():
    x = np.random.default_rng(1).standard_normal((2, 3))
    check_gradient(core.CreateOperator("AveragedLoss", ["X"], ["L"]), {"X": x}, wrt=[0])
    raises_on_blob("dY", lambda: run_op("AveragedLossGradient",
                                        {"X": x, "dY": np.ones(2)}, ["dX"]), match="one element")
    raises_on_blob("X", lambda: run_op("AveragedLoss", {"X": np.arange(4)}, ["L"]),
                   match="int64")
    from c2lite.schema import get_schema
    op = core.CreateOperator("AveragedLoss", ["X"], ["L"])
    assert get_schema("AveragedLoss").infer(op, [((3, 4), "float64")]) == [((), "float64")]


# -- WeightedSum / Scale / Iter ---------------------------------------------------------------
@settings(max_examples=30)
@given(st.integers(1, 4), st.lists(st.integers(0, 4), min_size=0, max_size=3),
       st.sampled_from(FLOATS), seeds)
def test_weighted_sum_matches_reference(pairs, shape, dtype, seed):
    rng = np.random.default_rng(seed)
    feeds, names = {}, []
    for i in range(pairs):
        feeds[f"X{i}"] = rand(rng, shape, dtype)
        w_shape = [(1,), (), (1, 1)][i % 3]
        feeds[f"w{i}"] = rand(rng, w_shape, np.float32)
        names += [f"X{i}", f"w{i}"]
    ws = Workspace()
    for k, v in feeds.items():
        ws.feed_blob(k, v)
    ws.run_operator_once(core.CreateOperator("WeightedSum", names, ["Y"]))
    y = ws.fetch_blob("Y")
    assert y.dtype == dtype and y.shape == tuple(shape)
    expected = np.zeros(shape)
    for pos in np.ndindex(*shape):
        expected[pos] = math.fsum(float(feeds[f"w{i}"].ravel()[0]) * float(feeds[f"X{i}"][pos])
                                  for i in range(pairs))
    np.testing.assert_allclose(y, expected, rtol=1e-5 if dtype == np.float32 else 1e-6,
                               atol=1e-5)
    # gradient kernel, with and without grad_on_w
    dy = rand(rng, shape, dtype)
    ws.feed_blob("dY", dy)
    for grad_on_w in (0, 1):
        outs = [f"dX{i}" for i in range(pairs)] + ([f"dw{i}" for i in range(pairs)]
                                                   if grad_on_w else [])
        ws.run_operator_once(core.CreateOperator("WeightedSumGradient", ["dY"] + names, outs,
                                                 grad_on_w=grad_on_w))
        for i in range(pairs):
            w = float(feeds[f"w{i}"].ravel()[0])
            np.testing.assert_allclose(ws.fetch_blob(f"dX{i}"), dy.astype(np.float64) * w,
                                       rtol=1e-5, atol=1e-6)
            if grad_on_w:
                dw = ws.fetch_blob(f"dw{i}")
                assert dw.shape == feeds[f"w{i}"].shape
                dot = math.fsum(float(a) * float(b) for a, b in
                                zip(dy.ravel(), feeds[f"X{i}"].ravel()))
                np.testing.assert_allclose(float(dw.ravel()[0]), dot, rtol=1e-4, atol=1e-5)


def test_weighted_sum_numeric_gradient_and_sgd_update_in_place():
    rng = np.random.default_rng(2)
    feeds = {"X0": rand(rng, (2, 3)), "w0": np.array([0.7]), "X1": rand(rng, (2, 3)),
             "w1": np.array([-1.5])}
    check_gradient(core.CreateOperator("WeightedSum", list(feeds), ["Y"]), feeds, wrt=[0, 2])
    check_gradient(core.CreateOperator("WeightedSum", list(feeds), ["Y"], grad_on_w=1), feeds,
                   wrt=[0, 1, 2, 3])
    ws = Workspace()
    param, grad = np.ones((2, 2), np.float32), np.full((2, 2), 2.0, np.float32)
    for k, v in {"param": param, "ONE": np.ones(1, np.float32), "grad": grad,
                 "LR": np.array([-0.1], np.float32)}.items():
        ws.feed_blob(k, v)
    ws.run_operator_once(core.CreateOperator("WeightedSum", ["param", "ONE", "grad", "LR"],
                                             ["param"]))
    np.testing.assert_allclose(ws.fetch_blob("param"), np.full((2, 2), 0.8), rtol=1e-6)


def test_weighted_sum_errors():
    x = np.ones((2, 2), np.float32)
    one = np.ones(1, np.float32)
    raises_on_blob("w0", lambda: run_op("WeightedSum", {"X0": x, "w0": np.ones(2, np.float32)},
                                        ["Y"]), match="exactly one element")
    raises_on_blob("w0", lambda: run_op("WeightedSum", {"X0": x, "w0": np.ones(1, np.int32)},
                                        ["Y"]), match="floating point")
    raises_on_blob("X1", lambda: run_op("WeightedSum", {"X0": x, "w0": one,
                                                        "X1": np.ones(3, np.float32), "w1": one},
                                        ["Y"]), match="3 elements")
    raises_on_blob("X1", lambda: run_op("WeightedSum", {"X0": x, "w0": one, "X1": x.astype(
        np.float64), "w1": one}, ["Y"]), match="float64")
    raises_on_blob("X0", lambda: run_op("WeightedSum", {"X0": np.ones(2, np.int64), "w0": one},
                                        ["Y"]), match="int64")
    # same element count, other shape: accepted and reshaped like X0 (as Caffe2 does)
    (y,) = run_op("WeightedSum", {"X0": x, "w0": one, "X1": np.ones(4, np.float32), "w1": one},
                  ["Y"])
    assert y.shape == (2, 2) and (y == 2).all()
    ws = Workspace()
    for k, v in {"X0": x, "w0": one, "X1": x, "w1": one}.items():
        ws.feed_blob(k, v)
    with pytest.raises(SchemaError, match="in-place"):
        ws.run_operator_once(core.CreateOperator("WeightedSum", ["X0", "w0", "X1", "w1"],
                                                 ["X1"]))
    with pytest.raises(SchemaError, match="allowed input sizes"):
        ws.run_operator_once(core.CreateOperator("WeightedSum", ["X0", "w0", "X1"], ["Y"]))
    ws.feed_blob("dY", x)
    with pytest.raises(EnforceError, match="needs 4 outputs"):
        ws.run_operator_once(core.CreateOperator("WeightedSumGradient",
                                                 ["dY", "X0", "w0", "X1", "w1"], ["a", "b"],
                                                 grad_on_w=1))


@settings(max_examples=20)
@given(st.lists(st.integers(0, 4), min_size=0, max_size=3), st.floats(-10, 10),
       st.sampled_from(FLOATS), seeds)
def test_scale_matches_reference(shape, scale, dtype, seed):
    x = rand(np.random.default_rng(seed), shape, dtype)
    (y,) = run_op("Scale", {"X": x}, ["Y"], scale=float(scale))
    assert y.dtype == dtype
    expected = np.array([float(v) * float(np.float32(scale)) for v in x.ravel()])
    np.testing.assert_allclose(y, expected.reshape(x.shape), **TOL[dtype])


def test_scale_gradient_default_and_errors():
    x = np.random.default_rng(4).standard_normal((3, 2))
    check_gradient(core.CreateOperator("Scale", ["X"], ["Y"], scale=-2.5), {"X": x}, wrt=[0])
    (y,) = run_op("Scale", {"X": x}, ["Y"])
    np.testing.assert_array_equal(y, x)
    raises_on_blob("X", lambda: run_op("Scale", {"X": np.arange(3)}, ["Y"], scale=2.0),
                   match="int64")


def test_iter_counts_in_place():
    ws = Workspace()
    op = core.CreateOperator("Iter", [], ["it"])
    for expected in (1, 2, 3):
        ws.run_operator_once(op)
        value = ws.fetch_blob("it")
        assert value.dtype == np.int64 and value.shape == (1,) and value[0] == expected
    ws.run_operator_once(core.CreateOperator("Iter", ["it"], ["it"]))
    assert ws.fetch_blob("it")[0] == 4
    ws.feed_blob("other", np.zeros(1, np.int64))
    with pytest.raises(SchemaError, match="should be as required"):
        ws.run_operator_once(core.CreateOperator("Iter", ["other"], ["it"]))
    ws.feed_blob("bad", np.zeros(1, np.float32))
    raises_on_blob("bad", lambda: ws.run_operator_once(core.CreateOperator("Iter", ["bad"],
                                                                           ["bad"])),
                   match="int64")
    ws.feed_blob("neg", np.array([-1], np.int64))
    raises_on_blob("neg", lambda: ws.run_operator_once(core.CreateOperator("Iter", ["neg"],
                                                                           ["neg"])),
                   match="negative")
    ws.feed_blob("two", np.zeros(2, np.int64))
    raises_on_blob("two", lambda: ws.run_operator_once(core.CreateOperator("Iter", ["two"],
                                                                           ["two"])),
                   match="2 elements")
    assert GradientRegistry.GetGradientForOp(core.CreateOperator("Iter", ["it"], ["it"]),
                                             ["it_grad"]) == ([], [None])


# -- the ops together: a tiny SGD loop built with the backward pass ---------------------------
def test_sgd_training_loop_reduces_loss():
    """FC -> Relu (in place) -> FC -> Sigmoid -> WeightedSum -> Scale -> AveragedLoss, its
    gradient graph from the makers, and WeightedSum SGD updates driven by an Iter counter."""
    rng = np.random.default_rng(7)
    ws = Workspace()
    feeds = {"x": rng.standard_normal((16, 3)).astype(np.float32),
             "W1": (rng.standard_normal((8, 3)) * 0.5).astype(np.float32),
             "b1": np.full(8, 0.1, np.float32),
             "W2": (rng.standard_normal((1, 8)) * 0.5).astype(np.float32),
             "b2": np.zeros(1, np.float32), "c": np.ones((16, 1), np.float32),
             "ONE": np.ones(1, np.float32), "HALF": np.array([0.5], np.float32),
             "LR": np.array([-0.5], np.float32), "iter": np.zeros(1, np.int64)}
    for k, v in feeds.items():
        ws.feed_blob(k, v)
    forward = [core.CreateOperator("FC", ["x", "W1", "b1"], ["h"]),
               core.CreateOperator("Relu", ["h"], ["h"]),  # in place, as legacy nets do
               core.CreateOperator("FC", ["h", "W2", "b2"], ["z"]),
               core.CreateOperator("Sigmoid", ["z"], ["p"]),
               core.CreateOperator("WeightedSum", ["p", "ONE", "c", "HALF"], ["d"]),
               core.CreateOperator("Scale", ["d"], ["d2"], scale=2.0),
               core.CreateOperator("AveragedLoss", ["d2"], ["loss"])]
    grad_ops, grads = GradientRegistry.GetBackwardPass(forward, ["loss"])
    assert [g.type for g in grad_ops] == ["ConstantFill", "AveragedLossGradient", "Scale",
                                          "WeightedSumGradient", "SigmoidGradient",
                                          "FCGradient", "ReluGradient", "FCGradient"]
    relu_grad = grad_ops[6]
    assert list(relu_grad.input) == ["h", "h_grad"] and list(relu_grad.output) == ["h_grad"]
    assert [a.name for a in grad_ops[2].arg] == ["scale"] and grad_ops[2].arg[0].f == 2.0
    update = [core.CreateOperator("WeightedSum", [p, "ONE", str(grads[p]), "LR"], [p])
              for p in ["W1", "b1", "W2", "b2"]]
    net = core.Net("train")
    net.Proto().op.extend([core.CreateOperator("Iter", ["iter"], ["iter"])] + forward
                          + grad_ops + update)
    losses = []
    for _ in range(30):
        ws.run_net_once(net)
        losses.append(float(ws.fetch_blob("loss")))
    assert ws.fetch_blob("iter")[0] == 30
    assert ws.fetch_blob("loss").shape == ()
    # loss = 2 * mean(sigmoid(z) + 0.5) = 1 + 2 * mean(p); SGD must push it down steadily
    assert all(b <= a + 1e-6 for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < losses[0] - 0.2, losses


# -- the same gradients through c2lite.testing, with Caffe2's float32 defaults ----------------
@pytest.mark.parametrize("op_type,n_inputs,args", [
    ("FC", 3, {}), ("FCTransposed", 3, {}), ("Relu", 1, {}), ("Sigmoid", 1, {}),
    ("AveragedLoss", 1, {}), ("Scale", 1, {"scale": 0.5}), ("WeightedSum", 4, {})])
def test_assert_gradient_checks_float32(op_type, n_inputs, args):
    testing = pytest.importorskip("c2lite.testing")
    rng = np.random.default_rng(11)
    x = rng.uniform(0.2, 1.0, (3, 4)) * rng.choice([-1.0, 1.0], (3, 4))  # no Relu kink
    inputs = {
        "FC": [x, rng.standard_normal((2, 4)), rng.standard_normal(2)],
        "FCTransposed": [x, rng.standard_normal((4, 2)), rng.standard_normal(2)],
        "WeightedSum": [x, np.array([0.3]), rng.standard_normal((3, 4)), np.array([-0.7])],
    }.get(op_type, [x])
    inputs = [np.asarray(v, np.float32) for v in inputs]
    names = ["X", "W", "b"] if op_type.startswith("FC") else \
        ["X0", "w0", "X1", "w1"] if op_type == "WeightedSum" else ["X"]
    op = core.CreateOperator(op_type, names[:n_inputs], ["Y"], **args)
    checked = [0, 2] if op_type == "WeightedSum" else range(n_inputs)
    for i in checked:
        testing.assertGradientChecks(None, op, inputs, i, [0])
