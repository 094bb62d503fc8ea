"""Tests of the PairWiseLoss CPU kernels (ops/_rank_loss_cpu.py).

The reference below follows section 6 of the architecture notes literally
(i over the session, j < i, skip |label_i - label_j| < FLT_EPSILON in
float32, sign from the label order, logLogit / sigmoid) but evaluates every
term and sum in float64.  The kernel must match it to 1e-6 relative; for
gradient entries an absolute allowance of 1e-9 times the entry's total term
magnitude covers cancellation between its positive and negative terms.
"""

import math
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ops import _rank_loss_cpu as K

EPS32 = np.float32(np.finfo(np.float32).eps)
LOG_T = float(np.log(np.float32(EPS32)))       # ln(FLT_EPSILON) in float32
RTOL = 1e-6
MAG_TOL = 1e-9


# --------------------------------------------------------------------------
# independent float64 reference (literal loops)
# --------------------------------------------------------------------------

def log_logit(z):
    if z < LOG_T:
        return 0.0
    if z > -LOG_T:
        return z
    return math.log(math.exp(z) + 1.0)


def sigmoid(z):
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def reference(x, label, dy, lengths):
    """(Y, dX, |dX| magnitude) in float64; x may be float32 or float64."""
    x = [float(v) for v in np.asarray(x).ravel()]
    lab = np.asarray(label, dtype=np.float32).ravel()
    n = len(x)
    lens = [n] if lengths is None else [int(v) for v in lengths]
    y = np.zeros(len(lens))
    dx = np.zeros(n)
    mag = np.zeros(n)
    o = 0
    for s, ln in enumerate(lens):
        with np.errstate(invalid="ignore"):                 # inf - inf
            dl = np.subtract.outer(lab[o:o + ln], lab[o:o + ln])   # float32
        total = 0.0
        npairs = 0
        g = [0.0] * ln
        m = [0.0] * ln
        for i in range(ln):
            for j in range(i):
                if abs(dl[i, j]) < EPS32:
                    continue
                npairs += 1
                sign = 1.0 if lab[o + i] > lab[o + j] else -1.0
                z = sign * (x[o + j] - x[o + i])
                total += log_logit(z)
                gg = sign * float(dy[s]) * sigmoid(z)
                g[i] -= gg
                g[j] += gg
                m[i] += abs(gg)
                m[j] += abs(gg)
        if npairs:
            y[s] = total / npairs
            dx[o:o + ln] = np.array(g) / npairs
            mag[o:o + ln] = np.array(m) / npairs
        o += ln
    return y, dx, mag


def check(x, label, dy, lengths, **kw):
    """Run the kernel (forward, then gradient) and compare with the
    reference; also compare a gradient computed without the forward."""
    y_ref, g_ref, mag = reference(x, label, dy, lengths)
    K.clear_cache()
    y = K.pairwise_loss_forward(x, label, lengths)
    g = K.pairwise_loss_gradient(x, label, dy, lengths)
    K.clear_cache()
    g2 = K.pairwise_loss_gradient(x, label, dy, lengths)
    assert y.dtype == np.float32 and g.dtype == np.float32
    assert y.shape == y_ref.shape and g.shape == g_ref.shape
    assert_close(y, y_ref, np.zeros_like(y_ref), "loss")
    assert_close(g, g_ref, mag, "gradient (after forward)")
    assert_close(g2, g_ref, mag, "gradient (alone)")


def assert_close(got, ref, mag, what):
    got = np.asarray(got, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        err = np.abs(got - ref)
        ok = (err <= RTOL * np.abs(ref) + MAG_TOL * mag + 1e-37) | (
            np.isnan(got) & np.isnan(ref)) | (got == ref)
    if not ok.all():
        k = int(np.argmin(ok))
        raise AssertionError("%s: entry %d kernel %r reference %r (mag %r)"
                             % (what, k, got[k], ref[k], mag[k]))


# --------------------------------------------------------------------------
# hand-checked cases (also validate the reference)
# --------------------------------------------------------------------------

def test_two_items_by_hand():
    x = np.array([0.0, 0.0], np.float32)
    lab = np.array([0.0, 1.0], np.float32)
    y = K.pairwise_loss_forward(x, lab, None)
    g = K.pairwise_loss_gradient(x, lab, np.array([1.0], np.float32), None)
    assert y[0] == pytest.approx(math.log(2.0), rel=1e-7)
    # item 1 is hi: dX[hi] -= sigmoid(0), dX[lo] += sigmoid(0)
    assert g.tolist() == pytest.approx([0.5, -0.5], rel=1e-7)
    y_ref, g_ref, _ = reference(x, lab, [1.0], None)
    assert y_ref[0] == pytest.approx(math.log(2.0), rel=1e-12)
    assert g_ref.tolist() == pytest.approx([0.5, -0.5], rel=1e-12)


def test_cutoffs_by_hand():
    # z = x_lo - x_hi: far below the cut-off -> 0, far above -> z itself
    lab = np.array([0.0, 1.0], np.float32)
    y = K.pairwise_loss_forward(np.array([0.0, 20.0], np.float32), lab, None)
    assert y[0] == 0.0
    y = K.pairwise_loss_forward(np.array([20.0, 0.0], np.float32), lab, None)
    assert y[0] == 20.0
    # the gradient has no cut-off: sigmoid(-20)
    g = K.pairwise_loss_gradient(np.array([0.0, 20.0], np.float32), lab,
                                 np.array([1.0], np.float32), None)
    s = 1.0 / (1.0 + math.exp(20.0))
    assert g.tolist() == pytest.approx([s, -s], rel=1e-6)


def test_eps_rule_is_not_transitive():
    lab = np.array([0.0, 0.6e-7, 1.2e-7], np.float32)
    x = np.array([0.3, -1.0, 0.7], np.float32)
    y = K.pairwise_loss_forward(x, lab, None)
    # only the pair (0, 2) counts: softplus(x0 - x2)
    assert y[0] == pytest.approx(math.log1p(math.exp(0.3 - 0.7)), rel=1e-6)
    check(x, lab, np.array([1.3], np.float32), None)


def test_empty_and_degenerate_layouts():
    e = np.zeros(0, np.float32)
    assert K.pairwise_loss_forward(e, e, None).tolist() == [0.0]
    assert K.pairwise_loss_gradient(e, e, np.ones(1, np.float32),
                                    None).shape == (0,)
    z = np.zeros(0, np.int64)
    assert K.pairwise_loss_forward(e, e, z).shape == (0,)
    assert K.pairwise_loss_gradient(e, e, e, z).shape == (0,)
    assert K.pairwise_loss_forward(e, e, np.array([0, 0])).tolist() == [0, 0]
    one = np.ones(1, np.float32)
    assert K.pairwise_loss_forward(one, one, None).tolist() == [0.0]
    assert K.pairwise_loss_gradient(one, one, one, None).tolist() == [0.0]
    # all labels tied: no pair anywhere
    x = np.arange(6, dtype=np.float32)
    lab = np.full(6, 2.0, np.float32)
    lens = np.array([2, 0, 4])
    assert K.pairwise_loss_forward(x, lab, lens).tolist() == [0, 0, 0]
    assert not K.pairwise_loss_gradient(x, lab, np.ones(3, np.float32),
                                        lens).any()
    with pytest.raises(ValueError):
        K.pairwise_loss_forward(x, lab, np.array([2, 2]))
    with pytest.raises(ValueError):
        K.pairwise_loss_forward(x, lab, np.array([7, -1]))


def test_non_finite_inputs_follow_the_original():
    rng = np.random.default_rng(5)
    for n in (7, 300):
        x = rng.standard_normal(n).astype(np.float32)
        lab = rng.integers(0, 3, n).astype(np.float32)
        x[1] = np.inf
        x[4] = -np.inf
        lab[2] = np.nan
        lab[5] = np.inf
        lens = np.array([3, n - 3])
        check(x, lab, np.array([1.0, -2.0], np.float32), lens)


# --------------------------------------------------------------------------
# property tests against the reference
# --------------------------------------------------------------------------

LABEL_KINDS = ("int5", "binary", "real", "eps", "tied")
SCALES = (0.01, 1.0, 4.0, 30.0, 1000.0)


def make_labels(rng, kind, n):
    """float32 labels of one LABEL_KINDS kind: graded, binary, real, eps-close or all tied."""
    if kind == "int5":
        return rng.integers(0, 5, n).astype(np.float32)
    if kind == "binary":
        return rng.integers(0, 2, n).astype(np.float32)
    if kind == "real":
        return rng.standard_normal(n).astype(np.float32)
    if kind == "eps":
        return (rng.integers(0, 6, n) * 0.6e-7).astype(np.float32)
    return np.full(n, 3.0, np.float32)


@st.composite
def problems(draw, max_sessions=6, max_len=45):
    nsess = draw(st.integers(0, max_sessions))
    lens = [draw(st.integers(0, max_len)) for _ in range(nsess)]
    if nsess == 0 or draw(st.booleans()):
        lengths = np.array(lens, dtype=np.int64)
    else:
        lengths = None
        lens = [max(lens[0], 0)]
    n = int(sum(lens))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(LABEL_KINDS))
    lab = make_labels(rng, kind, n)
    # per-session score scales, mixing narrow and wide sessions
    scales = [draw(st.sampled_from(SCALES)) for _ in lens]
    x = np.concatenate([rng.standard_normal(ln) * sc
                        for ln, sc in zip(lens, scales)] + [np.zeros(0)])
    x = x.astype(np.float32)
    if n and draw(st.booleans()):
        x[rng.integers(0, n, max(1, n // 4))] = x[0]     # tied scores
    dy = rng.standard_normal(len(lens)).astype(np.float32)
    if lengths is not None and nsess == 0:
        dy = np.zeros(0, np.float32)
    return x, lab, dy, lengths


PROP = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])


@PROP
@given(problems())
def test_matches_reference(prob):
    check(*prob)


@pytest.fixture
def force_batched(monkeypatch):
    """Route even tiny inputs through the batched small-session path."""
    monkeypatch.setattr(K, "TINY_MAX", 0)


@pytest.fixture
def force_large(monkeypatch):
    """Route sessions of more than 8 items through the large-session paths
    (quadrature for narrow scores, tiles otherwise), with small tiles."""
    monkeypatch.setattr(K, "TINY_MAX", 0)
    monkeypatch.setattr(K, "SMALL_MAX", 8)
    monkeypatch.setattr(K, "_FAST_MIN", 8)
    monkeypatch.setattr(K, "_TILE_ROWS", 8)
    monkeypatch.setattr(K, "_TILE_COLS", 16)


@PROP
@given(prob=problems(max_sessions=8, max_len=60))
def test_matches_reference_batched(force_batched, prob):
    check(*prob)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow,
                                 HealthCheck.function_scoped_fixture])
@given(prob=problems(max_sessions=3, max_len=70))
def test_matches_reference_large_paths(force_large, prob):
    check(*prob)



# --------------------------------------------------------------------------
# large sessions against a vectorised float64 reference
# --------------------------------------------------------------------------

def reference_chunked(x, label, rows=200):
    """Float64 loss sum, pair count and gradient sums (as lo minus as hi)
    of one session; row-chunked so memory stays bounded."""
    xs = x.astype(np.float64)
    n = xs.shape[0]
    loss = 0.0
    npairs = 0
    g = np.zeros(n)
    mag = np.zeros(n)
    for r0 in range(1, n, rows):
        r1 = min(n, r0 + rows)
        dl = label[r0:r1, None] - label[None, :r1]               # float32
        cnt = ~(np.abs(dl) < EPS32) & (np.arange(r1)[None, :]
                                        < np.arange(r0, r1)[:, None])
        sgn = np.where(dl > 0, 1.0, -1.0)
        z = sgn * (xs[None, :r1] - xs[r0:r1, None])
        with np.errstate(over="ignore"):
            f = np.where(z < LOG_T, 0.0,
                         np.where(z > -LOG_T, z, np.log1p(np.exp(z))))
            s = 1.0 / (1.0 + np.exp(-z))
        loss += float(np.where(cnt, f, 0.0).sum())
        npairs += int(cnt.sum())
        w = np.where(cnt, sgn * s, 0.0)
        g[r0:r1] -= w.sum(axis=1)
        g[:r1] += w.sum(axis=0)
        a = np.abs(w)
        mag[r0:r1] += a.sum(axis=1)
        mag[:r1] += a.sum(axis=0)
    return loss, npairs, g, mag


@pytest.mark.parametrize("labels,scale", [("int5", 1.0), ("real", 1.0),
                                          ("int5", 40.0)])
def test_large_session_accuracy(labels, scale):
    rng = np.random.default_rng(11)
    n = 6000
    x = (rng.standard_normal(n) * scale).astype(np.float32)
    if labels == "int5":
        lab = rng.integers(0, 5, n).astype(np.float32)
    else:
        lab = rng.standard_normal(n).astype(np.float32)
    dy = np.array([0.7], np.float32)
    loss, npairs, g, mag = reference_chunked(x, lab)
    K.clear_cache()
    y = K.pairwise_loss_forward(x, lab, None)
    dx = K.pairwise_loss_gradient(x, lab, dy, None)
    assert abs(float(y[0]) - loss / npairs) <= RTOL * abs(loss / npairs)
    scale_g = float(dy[0]) / npairs
    assert_close(dx, g * scale_g, mag * scale_g, "large-session gradient")


def test_many_sessions_with_threads(monkeypatch):
    rng = np.random.default_rng(3)
    lens = rng.integers(0, 120, 400)
    n = int(lens.sum())
    x = rng.standard_normal(n).astype(np.float32)
    lab = rng.integers(0, 5, n).astype(np.float32)
    dy = rng.standard_normal(lens.shape[0]).astype(np.float32)
    outs = []
    for th in (1, 2):
        monkeypatch.setattr(K, "max_threads", th)
        monkeypatch.setattr(K, "_PAR_MIN_WORK", 0)
        monkeypatch.setattr(K, "_PART_ITEMS", 2048)
        K.clear_cache()
        outs.append((K.pairwise_loss_forward(x, lab, lens),
                     K.pairwise_loss_gradient(x, lab, dy, lens)))
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=2e-7)
    np.testing.assert_allclose(outs[0][1], outs[1][1], rtol=2e-7, atol=1e-12)
    # spot-check a few sessions against the literal reference
    o = 0
    for s in range(0, 40):
        ln = int(lens[s])
        y_ref, g_ref, mag = reference(x[o:o + ln], lab[o:o + ln], dy[s:s + 1],
                                      None)
        assert_close(outs[1][0][s:s + 1], y_ref, np.zeros(1), "loss")
        assert_close(outs[1][1][o:o + ln], g_ref, mag, "gradient")
        o += ln


# --------------------------------------------------------------------------
# gradient = derivative of the loss
# --------------------------------------------------------------------------

def test_gradient_matches_central_differences():
    rng = np.random.default_rng(8)
    lens = np.array([9, 0, 14, 1, 6])
    n = int(lens.sum())
    x = (rng.standard_normal(n) * 0.8).astype(np.float32)
    lab = rng.integers(0, 3, n).astype(np.float32)
    dy = rng.standard_normal(lens.shape[0]).astype(np.float32)
    K.clear_cache()
    g = K.pairwise_loss_gradient(x, lab, dy, lens).astype(np.float64)
    x64 = x.astype(np.float64)
    h = 1e-5
    fd = np.zeros(n)
    for k in range(n):
        xp = x64.copy()
        xm = x64.copy()
        xp[k] += h
        xm[k] -= h
        yp = reference(xp, lab, dy, lens)[0]
        ym = reference(xm, lab, dy, lens)[0]
        fd[k] = float(np.dot(dy.astype(np.float64), yp - ym)) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-8)


# --------------------------------------------------------------------------
# forward -> gradient sharing and threading machinery
# --------------------------------------------------------------------------

def test_cache_never_serves_changed_inputs():
    rng = np.random.default_rng(4)
    for n in (50, 5000):
        x = rng.standard_normal(n).astype(np.float32)
        lab = rng.integers(0, 4, n).astype(np.float32)
        dy = np.array([1.0], np.float32)
        K.pairwise_loss_forward(x, lab, None)
        x[n // 2] += 0.5                       # in place, same object
        got = K.pairwise_loss_gradient(x, lab, dy, None)
        K.clear_cache()
        fresh = K.pairwise_loss_gradient(x, lab, dy, None)
        np.testing.assert_array_equal(got, fresh)
        K.pairwise_loss_forward(x, lab, None)
        lab[3] += 1.0
        got = K.pairwise_loss_gradient(x, lab, dy, None)
        K.clear_cache()
        np.testing.assert_array_equal(
            got, K.pairwise_loss_gradient(x, lab, dy, None))


def test_share_work_off_gives_same_result(monkeypatch):
    rng = np.random.default_rng(9)
    lens = rng.integers(1, 60, 50)
    n = int(lens.sum())
    x = rng.standard_normal(n).astype(np.float32)
    lab = rng.integers(0, 5, n).astype(np.float32)
    dy = rng.standard_normal(50).astype(np.float32)
    K.pairwise_loss_forward(x, lab, lens)
    a = K.pairwise_loss_gradient(x, lab, dy, lens)
    monkeypatch.setattr(K, "share_work", False)
    K.clear_cache()
    K.pairwise_loss_forward(x, lab, lens)
    b = K.pairwise_loss_gradient(x, lab, dy, lens)
    np.testing.assert_allclose(a, b, rtol=2e-7, atol=1e-12)


def test_runner_interrupt_stops_helpers_and_leaks_no_thread():
    before = threading.active_count()
    done = []

    def slow(wid, stop):
        time.sleep(0.01)
        done.append(wid)

    def interrupt(wid, stop):
        if wid == 0:
            raise KeyboardInterrupt
        time.sleep(0.01)

    tasks = [slow] * 3 + [interrupt] * 200
    with pytest.raises(KeyboardInterrupt):
        K._run_tasks(tasks, 2)
    assert threading.active_count() == before
    assert len(done) < 200              # the remaining tasks were dropped


def test_runner_propagates_helper_errors():
    before = threading.active_count()

    def task(wid, stop):
        if wid == 1:
            raise ZeroDivisionError("boom")
        time.sleep(0.005)

    with pytest.raises(ZeroDivisionError):
        K._run_tasks([task] * 50, 2)
    assert threading.active_count() == before


def test_module_constants():
    assert K.FLT_EPS == pytest.approx(1.1920929e-07, rel=1e-7)
    assert K.LOG_THRESHOLD == pytest.approx(-15.942385, abs=1e-6)
    assert K.LOG_THRESHOLD == float(np.float32(K.LOG_THRESHOLD))


# --------------------------------------------------------------------------
# less common routes through the kernel
# --------------------------------------------------------------------------

def test_mixed_finite_and_non_finite_sessions():
    rng = np.random.default_rng(12)
    lens = np.array([30, 25, 40, 0, 3])
    n = int(lens.sum())
    x = rng.standard_normal(n).astype(np.float32)
    lab = rng.integers(0, 4, n).astype(np.float32)
    lab[31] = np.nan                       # second session: original rules
    lab[56:96] = np.nan                    # third session: no finite label
    check(x, lab, rng.standard_normal(5).astype(np.float32), lens)


def test_input_forms_and_errors():
    x = np.array([[0.5], [1.0], [-2.0]])              # (N, 1) float64
    lab = [0, 2, 1]
    y = K.pairwise_loss_forward(x, lab, [3])
    y_ref = reference(np.float32(x.ravel()), np.float32(lab), [1.0], [3])[0]
    assert y.dtype == np.float32
    assert_close(y, y_ref, np.zeros(1), "loss")
    with pytest.raises(ValueError):
        K.pairwise_loss_forward(np.zeros(3, np.float32),
                                np.zeros(2, np.float32), None)
    with pytest.raises(ValueError):
        K.pairwise_loss_gradient(np.zeros(3, np.float32),
                                 np.zeros(3, np.float32),
                                 np.zeros(2, np.float32), None)


def test_single_session_sizes_around_the_dense_path():
    rng = np.random.default_rng(13)
    for n in (57, 97, 112, 150, K.TINY_MAX, K.TINY_MAX + 1):
        x = rng.standard_normal(n).astype(np.float32)
        lab = rng.integers(0, 3, n).astype(np.float32)
        check(x, lab, np.array([0.9], np.float32), None)


def test_sessions_far_apart_in_score(monkeypatch):
    # each session narrow, but sessions thousands apart: per-session shift
    rng = np.random.default_rng(14)
    lens = np.array([40, 35, 50])
    n = int(lens.sum())
    x = rng.standard_normal(n)
    x[:40] += 3000.0
    x[75:] -= 3000.0
    x = x.astype(np.float32)
    lab = rng.integers(0, 5, n).astype(np.float32)
    monkeypatch.setattr(K, "TINY_MAX", 0)
    check(x, lab, rng.standard_normal(3).astype(np.float32), lens)


def test_forward_only_paths(monkeypatch):
    monkeypatch.setattr(K, "share_work", False)
    monkeypatch.setattr(K, "TINY_MAX", 0)
    rng = np.random.default_rng(15)
    lens = rng.integers(0, 70, 30)
    n = int(lens.sum())
    x = rng.standard_normal(n).astype(np.float32)
    for lab in (rng.integers(0, 5, n).astype(np.float32),
                rng.standard_normal(n).astype(np.float32)):
        check(x, lab, rng.standard_normal(30).astype(np.float32), lens)


def test_long_sessions_in_the_batched_path():
    # steps of the staircase longer than one product group (56 rows)
    rng = np.random.default_rng(16)
    lens = np.array([700, 400, 1024])
    x = rng.standard_normal(int(lens.sum())).astype(np.float32)
    lab = rng.integers(0, 3, x.shape[0]).astype(np.float32)
    lab[700:1100] = rng.standard_normal(400)      # many distinct labels
    dy = np.array([1.0, -0.5, 2.0], np.float32)
    K.clear_cache()
    y = K.pairwise_loss_forward(x, lab, lens)
    g = K.pairwise_loss_gradient(x, lab, dy, lens)
    o = 0
    for s, ln in enumerate(lens):
        loss, npairs, gs, mag = reference_chunked(x[o:o + ln], lab[o:o + ln])
        sc = float(dy[s]) / npairs
        assert abs(float(y[s]) - loss / npairs) <= RTOL * loss / npairs
        assert_close(g[o:o + ln], gs * sc, mag * abs(sc), "gradient")
        o += ln


def test_large_session_huge_spread():
    # tile path with scores +-1e3: most tiles saturated, the rest split
    rng = np.random.default_rng(17)
    n = 3000
    x = (rng.uniform(-1000, 1000, n)).astype(np.float32)
    x[:200] = rng.standard_normal(200).astype(np.float32)
    lab = rng.integers(0, 4, n).astype(np.float32)
    dy = np.array([1.5], np.float32)
    loss, npairs, g, mag = reference_chunked(x, lab)
    K.clear_cache()
    y = K.pairwise_loss_forward(x, lab, None)
    dx = K.pairwise_loss_gradient(x, lab, dy, None)
    assert abs(float(y[0]) - loss / npairs) <= RTOL * abs(loss / npairs)
    assert_close(dx, g * (1.5 / npairs), mag * (1.5 / npairs), "gradient")


def test_digest_of_large_inputs():
    rng = np.random.default_rng(18)
    x = rng.standard_normal(1 << 20).astype(np.float32)
    lab = rng.integers(0, 5, 1 << 20).astype(np.float32)
    lens = np.array([1 << 20], np.int64)
    d = K._digest(x, lab, lens)
    assert d == K._digest(x.copy(), lab.copy(), lens)
    x[12345] = np.nextafter(x[12345], np.float32(np.inf))
    assert d != K._digest(x, lab, lens)


def test_digest_is_the_same_with_or_without_threads():
    rng = np.random.default_rng(19)
    for n in (5000, 1 << 20):
        x = rng.standard_normal(n).astype(np.float32)
        lab = rng.integers(0, 5, n).astype(np.float32)
        lens = np.array([n], np.int64)
        assert K._digest(x, lab, lens, True) == K._digest(x, lab, lens, False)


def test_non_finite_dy_and_items_without_pairs():
    # item 0 is within FLT_EPSILON of both others, so it is in no pair;
    # the original leaves its dX at 0 whatever dY is
    x = np.array([0.5, -1.0, 2.0, 0.1, 0.3], np.float32)
    lab = np.array([0.6e-7, 0.0, 1.2e-7, 0.0, 1.0], np.float32)
    lens = np.array([3, 2])
    for d in (np.inf, -np.inf, np.nan):
        dy = np.array([d, 1.0], np.float32)
        _, g_ref, mag = reference(x, lab, dy, lens)
        K.clear_cache()
        K.pairwise_loss_forward(x, lab, lens)
        assert_close(K.pairwise_loss_gradient(x, lab, dy, lens), g_ref, mag,
                     "gradient with dY = %r" % d)


# --------------------------------------------------------------------------
# tiny single session: the direct path taken before any normalisation
# --------------------------------------------------------------------------

@st.composite
def tiny_sessions(draw):
    n = draw(st.integers(2, K.TINY_MAX))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 31 - 1)))
    kind = draw(st.sampled_from(LABEL_KINDS))
    lab = make_labels(rng, kind, n)
    # spreads below, at and above the dense limit (12) and the cut-offs
    # (15.94); an offset far from 0 exercises the centring
    spread = draw(st.sampled_from((0.0, 0.5, 5.0, 11.9, 12.0, 15.0, 40.0)))
    offset = draw(st.sampled_from((0.0, -3.0, 650.0, -2000.0)))
    x = rng.uniform(0.0, 1.0, n)
    x[0], x[-1] = 0.0, 1.0
    x = (x * spread + offset).astype(np.float32)
    if draw(st.booleans()):
        x[rng.integers(0, n, max(1, n // 4))] = x[0]       # tied scores
    lengths = draw(st.sampled_from((None, "int64", "int32")))
    if lengths is not None:
        lengths = np.array([n], dtype=lengths)
    dy = np.array([draw(st.sampled_from((1.0, -0.7, 3e4)))], np.float32)
    return x, lab, dy, lengths


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(tiny_sessions())
def test_tiny_single_session_matches_reference(prob):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # no RuntimeWarning
        check(*prob)


def test_tiny_single_session_takes_the_direct_path(monkeypatch):
    # narrow scores: neither the forward nor the gradient (after it) may
    # reach the normalising entry points
    def boom(*a, **k):
        raise AssertionError("full path taken")
    rng = np.random.default_rng(21)
    cases = []
    for n in (2, 3, 64, 57, 255, 256):
        x = (rng.uniform(0, 11.99, n) - 500.0).astype(np.float32)
        lab = rng.integers(0, 4, n).astype(np.float32)
        cases.append((x, lab, rng.standard_normal(1).astype(np.float32)))
    refs = [reference(x, lab, dy, None) for x, lab, dy in cases]
    monkeypatch.setattr(K, "_forward", boom)
    monkeypatch.setattr(K, "_gradient", boom)
    for (x, lab, dy), (y_ref, g_ref, mag) in zip(cases, refs):
        for lengths in (None, np.array([x.shape[0]], np.int32)):
            K.clear_cache()
            y = K.pairwise_loss_forward(x, lab, lengths)
            g = K.pairwise_loss_gradient(x, lab, dy, lengths)
            assert_close(y, y_ref, np.zeros(1), "loss")
            assert_close(g, g_ref, mag, "gradient")


def test_tiny_single_session_falls_back_quietly():
    # inputs the direct path must refuse: non-finite values, labels whose
    # float32 differences overflow, huge or non-finite dY
    import warnings
    n = 40
    rng = np.random.default_rng(22)
    base_x = rng.standard_normal(n).astype(np.float32)
    base_l = rng.integers(0, 3, n).astype(np.float32)
    variants = []
    for v in (np.nan, np.inf):
        x = base_x.copy()
        x[5] = v
        variants.append((x, base_l))
        lab = base_l.copy()
        lab[7] = v
        variants.append((base_x, lab))
    lab = base_l.copy()
    lab[:20] = 3e38
    lab[20:] = -3e38
    variants.append((base_x, lab))
    for x, lab in variants:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            check(x, lab, np.array([0.5], np.float32), None)
    for d in (np.inf, np.nan, 3e35, -3e38):
        dy = np.array([d], np.float32)
        y_ref, g_ref, mag = reference(base_x, base_l, dy, None)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            K.clear_cache()
            K.pairwise_loss_forward(base_x, base_l, None)
            g = K.pairwise_loss_gradient(base_x, base_l, dy, None)
        K.clear_cache()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            np.testing.assert_array_equal(
                g, K.pairwise_loss_gradient(base_x, base_l, dy, None))


def test_runner_interrupt_while_joining_stops_and_joins_helpers():
    """Ctrl-C landing while the caller waits for a helper: no helper outlives the call."""
    before = threading.active_count()
    ran_after = []

    def task(wid, stop):
        if wid == 0:
            return                      # the caller runs out of work and starts joining
        for _ in range(200):            # a helper's long task polls stop between blocks
            if stop.is_set():
                return
            time.sleep(0.005)
        ran_after.append(wid)

    original_join = threading.Thread.join
    calls = []

    def interrupted_join(self, timeout=None):
        calls.append(self.name)
        if len(calls) == 1:
            raise KeyboardInterrupt     # what a SIGINT does to a blocked join
        return original_join(self, timeout)

    threading.Thread.join = interrupted_join
    try:
        with pytest.raises(KeyboardInterrupt):
            K._run_tasks([task] * 4, 2)
    finally:
        threading.Thread.join = original_join
    assert threading.active_count() == before
    assert ran_after == []              # the helper saw stop and quit early
