"""PairWiseLoss / PairWiseLossGradient as operators: Caffe2's own batch test, gradient checks
through c2lite.testing, the full forward+backward graph, and every check of reference §6 in
order with its message."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import c2lite
from c2lite import core, testing, workspace
from c2lite.errors import EnforceError, SchemaError

FLT_EPS = np.float32(np.finfo(np.float32).eps)
K = float(np.log(np.float32(FLT_EPS)))


def counted_pairs(x, label, lengths=None):
    """§6 literally: per session s, yield (s, i, j, sign, z) for every counted pair j < i,
    with z = sign * (x_j - x_i) in float64; also yield (s, None, ...) closing each session."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    label = np.asarray(label, dtype=np.float32).reshape(-1)
    lengths = [len(x)] if lengths is None else [int(v) for v in lengths]
    offset = 0
    for s, length in enumerate(lengths):
        for i in range(offset, offset + length):
            for j in range(offset, i):
                if abs(np.float32(label[i] - label[j])) < FLT_EPS:
                    continue
                sign = 1.0 if label[i] > label[j] else -1.0
                yield s, i, j, sign, sign * (float(x[j]) - float(x[i]))
        yield s, None, offset, length, None
        offset += length


def scalar_reference(x, label, lengths=None):
    """Per-session mean of logLogit over counted pairs (independent of the kernels)."""
    out, total, pairs = [], 0.0, 0
    for _, i, _, _, z in counted_pairs(x, label, lengths):
        if i is None:
            out.append(total / pairs if pairs else 0.0)
            total, pairs = 0.0, 0
            continue
        pairs += 1
        total += 0.0 if z < K else (z if z > -K else float(np.log1p(np.exp(z))))
    return np.array(out, dtype=np.float64)


def scalar_gradient(x, label, dy, lengths=None):
    """sign * dY[s] * sigmoid(z) moved from the higher item to the lower, / numPairs."""
    dx, pairs = np.zeros(np.asarray(x).size), 0
    for s, i, j, sign, z in counted_pairs(x, label, lengths):
        if i is None:
            offset, length = j, sign
            if pairs:
                dx[offset:offset + length] /= pairs
            pairs = 0
            continue
        pairs += 1
        g = sign * float(dy[s]) / (1.0 + np.exp(-z))
        dx[i] -= g
        dx[j] += g
    return dx


def pairwise_op(with_lengths=True, out="out"):
    ins = ["X", "label", "lengths"] if with_lengths else ["X", "label"]
    return core.CreateOperator("PairWiseLoss", ins, [out])


def run(op, **blobs):
    ws = c2lite.Workspace()
    for name, value in blobs.items():
        ws.feed_blob(name, value)
    ws.run_operator_once(op)
    return ws.fetch_blob(op.output[0])


# Caffe2's rank_loss_operator_test.test_pair_wise_loss_batch, ported (hypothesis over session
# layouts, integer labels, 1-D X), with the same three checks.
@settings(max_examples=25)
@given(n=st.integers(0, 10), k=st.integers(1, 5), data=st.data())
def test_caffe2_batch_test(n, k, data):
    lengths = np.array(data.draw(st.lists(st.integers(1, k), min_size=n, max_size=n)),
                       dtype=np.int32)
    total = int(lengths.sum())
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    X = rng.standard_normal(total).astype(np.float32)
    label = rng.integers(0, 3, total).astype(np.float32)
    op = pairwise_op()

    def reference(X, label, lengths):
        return [scalar_reference(X, label, lengths).astype(np.float32) if total else
                np.zeros(0, dtype=np.float32)]

    testing.assertReferenceChecks(testing.cpu_do, op, [X, label, lengths], reference)
    testing.assertDeviceChecks(testing.device_options, op, [X, label, lengths], [0])
    if total:
        testing.assertGradientChecks(testing.cpu_do, op, [X, label, lengths], 0, [0])


@settings(max_examples=40)
@given(data=st.data())
def test_forward_and_gradient_match_scalar_reference(data):
    lengths = np.array(data.draw(st.lists(st.integers(0, 12), min_size=1, max_size=6)),
                       dtype=np.int64)
    n = int(lengths.sum())
    scale = data.draw(st.sampled_from([1.0, 10.0, 40.0]))
    label_kind = data.draw(st.sampled_from(["int", "real", "close"]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    x = (rng.standard_normal(n) * scale).astype(np.float32)
    if label_kind == "int":
        label = rng.integers(0, 4, n).astype(np.float32)
    elif label_kind == "real":
        label = rng.random(n).astype(np.float32)
    else:
        label = (rng.integers(0, 4, n) * np.float32(0.6e-7)).astype(np.float32)
    shape_2d = data.draw(st.booleans())
    X = x.reshape(-1, 1) if shape_2d else x
    L = label.reshape(-1, 1) if data.draw(st.booleans()) else label
    if n == 0:
        assert run(pairwise_op(), X=X, label=L, lengths=lengths).shape == (0,)
        return
    y = run(pairwise_op(), X=X, label=L, lengths=lengths)
    want = scalar_reference(x, label, lengths)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    dy = rng.standard_normal(len(lengths)).astype(np.float32)
    grad_op = core.CreateOperator("PairWiseLossGradient", ["X", "label", "dY", "lengths"], ["dX"])
    dx = run(grad_op, X=X, label=L, dY=dy, lengths=lengths)
    assert dx.shape == X.shape and dx.dtype == np.float32
    np.testing.assert_allclose(dx.reshape(-1), scalar_gradient(x, label, dy, lengths),
                               rtol=1e-5, atol=1e-6)


def test_without_lengths_is_one_session():
    x = np.array([0.3, -1.0, 2.0, 0.5], dtype=np.float32)
    label = np.array([1, 0, 2, 1], dtype=np.float32)
    y = run(pairwise_op(with_lengths=False), X=x, label=label)
    assert y.shape == (1,)
    np.testing.assert_allclose(y, scalar_reference(x, label), rtol=1e-6)
    testing.assertGradientChecks(testing.cpu_do, pairwise_op(with_lengths=False), [x, label],
                                 0, [0])


def test_two_item_prediction_like_caffe2():
    x = np.array([[0.7], [-0.4]], dtype=np.float32)
    label = np.array([[0.0], [1.0]], dtype=np.float32)
    y = run(pairwise_op(with_lengths=False), X=x, label=label)
    # label_1 > label_0: log(1 + exp(X0 - X1))
    assert abs(float(y[0]) - np.log1p(np.exp(0.7 + 0.4))) < 1e-4


def test_gradient_graph_runs_and_matches_finite_differences():
    rng = np.random.default_rng(3)
    lengths = np.array([4, 0, 6, 3], dtype=np.int32)
    x = rng.standard_normal(13).astype(np.float32)
    label = rng.integers(0, 3, 13).astype(np.float32)
    net = core.Net("pwl_grad")
    y = net.PairWiseLoss(["X", "label", "lengths"], "Y")
    loss = net.AveragedLoss(y, "loss")
    grads = net.AddGradientOperators([loss])
    types = [op.type for op in net.Proto().op]
    assert types[-3:] == ["ConstantFill", "AveragedLossGradient", "PairWiseLossGradient"]
    assert grads["X"] == "X_grad" and grads["loss"] == "loss_autogen_grad"
    ws = c2lite.Workspace()
    for name, value in {"X": x, "label": label, "lengths": lengths}.items():
        ws.feed_blob(name, value)
    ws.run_net_once(net)
    analytic = ws.fetch_blob("X_grad").astype(np.float64)

    def loss_at(xv):
        return scalar_reference(xv, label, lengths).mean()

    numeric = np.zeros(13)
    for i in range(13):
        step = np.zeros(13)
        step[i] = 1e-3
        numeric[i] = (loss_at(x + step) - loss_at(x - step)) / 2e-3
    np.testing.assert_allclose(analytic, numeric, rtol=1e-2, atol=1e-4)


def test_maker_emits_caffe2_gradient_def():
    grad_ops, g_input = core.GradientRegistry.GetGradientForOp(pairwise_op(), ["out_grad"])
    (g,) = grad_ops
    assert g.type == "PairWiseLossGradient" and g.is_gradient_op
    assert list(g.input) == ["X", "label", "out_grad", "lengths"] and list(g.output) == ["X_grad"]
    assert g_input == ["X_grad", None, None]
    no_len, _ = core.GradientRegistry.GetGradientForOp(pairwise_op(False), ["out_grad"])
    assert list(no_len[0].input) == ["X", "label", "out_grad"]


# -- §6 checks, in order, with Caffe2's messages -----------------------------------------------
F = np.float32


def test_empty_batch_paths():
    # Forward: N == 0 returns Y of shape (0,) before any other check, even with lengths [0, 0].
    assert run(pairwise_op(), X=np.zeros(0, F), label=np.zeros(3, F),
               lengths=np.array([0, 0], np.int32)).shape == (0,)
    assert run(pairwise_op(False), X=np.array(1.0, F), label=np.zeros(0, F)).shape == (0,)
    grad = core.CreateOperator("PairWiseLossGradient", ["X", "label", "dY", "lengths"], ["dX"])
    dx = run(grad, X=np.zeros((0, 1), F), label=np.zeros(0, F), dY=np.zeros(7, F),
             lengths=np.array([5], np.int32))
    assert dx.shape == (0, 1)
    with pytest.raises(EnforceError, match=r"N == X.size\(\). 0 vs 1"):
        run(grad, X=np.array(1.0, F), label=np.zeros(0, F), dY=np.zeros(1, F),
            lengths=np.zeros(0, np.int32))


@pytest.mark.parametrize("case, blobs, message, blob", [
    ("lengths 2-D", dict(lengths=np.ones((2, 2), np.int32)), r"lengths.dim\(\) == 1. 2 vs 1",
     "lengths"),
    ("float lengths", dict(lengths=np.array([2.0, 2.0], np.float32)),
     "caller expects elements to be int while tensor contains float32", "lengths"),
    ("lengths sum", dict(lengths=np.array([1, 2], np.int32)), "len_sum == N. 3 vs 4", "lengths"),
    ("negative length", dict(lengths=np.array([6, -2], np.int32)),
     r"lengths must be non-negative, but lengths\[1\] = -2", "lengths"),
    ("label 2-D wide", dict(label=np.zeros((4, 2), F)), r"label.dim\(\) == 1", "label"),
    ("label rows", dict(label=np.zeros(5, F)), r"label.dim32\(0\) == N. 5 vs 4", "label"),
    ("two classes", dict(X=np.zeros((4, 2), F)), "1 == D. 1 vs 2. Only supports one class",
     "X"),
    ("int labels", dict(label=np.zeros(4, np.int32)),
     "caller expects elements to be float32 while tensor contains int32", "label"),
    ("double X", dict(X=np.zeros(4, np.float64)),
     "caller expects elements to be float32 while tensor contains float64", "X"),
])
def test_forward_errors(case, blobs, message, blob):
    feeds = dict(X=np.zeros(4, F), label=np.arange(4, dtype=F),
                 lengths=np.array([2, 2], np.int32))
    feeds.update(blobs)
    with pytest.raises(EnforceError, match=message) as info:
        run(pairwise_op(), **feeds)
    assert info.value.blob == blob and info.value.op_type == "PairWiseLoss"


@pytest.mark.parametrize("blobs, message, blob", [
    (dict(dY=np.zeros((2, 1), F)), r"dY.dim\(\) == 1. 2 vs 1", "dY"),
    (dict(dY=np.zeros(3, F)), r"dY.dim32\(0\) == len_size. 3 vs 2", "dY"),
    (dict(lengths=np.array([3, 3], np.int32)), "len_sum == N. 6 vs 4", "lengths"),
    (dict(label=np.zeros(3, F)), r"label.dim32\(0\) == N. 3 vs 4", "label"),
])
def test_gradient_errors(blobs, message, blob):
    feeds = dict(X=np.zeros(4, F), label=np.arange(4, dtype=F), dY=np.ones(2, F),
                 lengths=np.array([2, 2], np.int32))
    feeds.update(blobs)
    grad = core.CreateOperator("PairWiseLossGradient", ["X", "label", "dY", "lengths"], ["dX"])
    with pytest.raises(EnforceError, match=message) as info:
        run(grad, **feeds)
    assert info.value.blob == blob


def test_schema_counts_and_no_inplace():
    ws = c2lite.Workspace()
    ws.feed_blob("X", np.zeros(2, F))
    with pytest.raises(SchemaError, match="Input size 1 not in range"):
        ws.run_operator_once(core.CreateOperator("PairWiseLoss", ["X"], ["Y"]))
    ws.feed_blob("label", np.zeros(2, F))
    with pytest.raises(SchemaError, match="in-place but this is actually not supported"):
        ws.run_operator_once(core.CreateOperator("PairWiseLoss", ["X", "label"], ["X"]))


def test_large_session_accuracy_beats_float32_accumulation():
    """One session of 6,000 items: within 1e-6 of a float64 ground truth (chunked)."""
    rng = np.random.default_rng(11)
    n = 6000
    x = rng.standard_normal(n).astype(np.float32)
    label = rng.integers(0, 5, n).astype(np.float32)
    total, pairs = 0.0, 0
    x64, l64 = x.astype(np.float64), label.astype(np.float64)
    for start in range(0, n, 500):
        rows = slice(start, min(n, start + 500))
        diff_l = l64[rows, None] - l64[None, :]
        mask = diff_l > 0  # each unordered pair once, as (higher, lower)
        z = (x64[None, :] - x64[rows, None])[mask]
        total += np.logaddexp(0.0, z).sum()
        pairs += int(mask.sum())
    y = run(pairwise_op(False), X=x, label=label)
    assert abs(float(y[0]) - total / pairs) <= 1e-6 * abs(total / pairs)
