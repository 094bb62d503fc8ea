"""Safety of values: PairWiseLoss / PairWiseLossGradient on bad, special and huge inputs.

* NaN / Inf scores, labels and dY follow IEEE arithmetic through Caffe2's formulas (checked
  against a literal float64 transcription of rank_loss_op.cc), silently (no RuntimeWarning).
  Observed: a NaN score makes its session's loss NaN and the gradient NaN for every item
  paired with it; other sessions are unaffected, bit for bit. An infinite dY[s] is applied to
  each item's summed pair terms, so an item with pair terms of both signs gets +-inf where
  Caffe2's pair-by-pair accumulation (inf - inf) gives NaN; only quietness and confinement to
  session s are asserted for it.
* Every malformed input has one defined outcome: Caffe2's result (N == 0 paths) or an
  EnforceError whose message states the violated condition and names the blob, raised in
  Caffe2's check order, leaving the output blob untouched.
* Resources: one 100,000-item session runs in bounded memory and stops promptly on Ctrl-C.
"""
from __future__ import annotations

import gc
import math
import os
import signal
import threading
import time
import tracemalloc
import warnings
from typing import Any, Optional

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import c2lite
import c2lite.ops.rank_loss  # noqa: F401  (registers the ops; not yet imported by c2lite.ops)
from c2lite import core
from c2lite.errors import EnforceError

EPS32 = np.float32(np.finfo(np.float32).eps)
CUTOFF = float(np.log(EPS32))  # logLogit's k = ln(FLT_EPSILON)
SENTINEL = np.array([-123.0], dtype=np.float32)


# ----------------------------------------------------------------------------------------
# A literal transcription of rank_loss_op.cc (reference section 6), in float64
# ----------------------------------------------------------------------------------------

def _log_logit(z: float) -> float:
    if z < CUTOFF:
        return 0.0
    if z > -CUTOFF:
        return z
    return math.log(math.exp(z) + 1.0) if not math.isnan(z) else math.nan


def _sigmoid(z: float) -> float:
    if math.isnan(z):
        return math.nan
    return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


def _sessions(n: int, lengths: Optional[np.ndarray]) -> list[tuple[int, int]]:
    sizes = [n] if lengths is None else [int(v) for v in lengths]
    offsets = np.concatenate(([0], np.cumsum(sizes))).astype(int)
    return [(int(offsets[s]), int(offsets[s + 1])) for s in range(len(sizes))]


def _pairs(label: np.ndarray, begin: int, end: int):
    for i in range(begin, end):
        for j in range(begin, i):
            with np.errstate(invalid="ignore", over="ignore"):
                same = abs(np.float32(label[i]) - np.float32(label[j])) < EPS32
            if not same:
                yield i, j, (1.0 if label[i] > label[j] else -1.0)


def reference_forward(x: np.ndarray, label: np.ndarray,
                      lengths: Optional[np.ndarray] = None) -> np.ndarray:
    x, label = x.astype(np.float64).ravel(), label.ravel()
    out = []
    with np.errstate(invalid="ignore", over="ignore"):
        for begin, end in _sessions(x.shape[0], lengths):
            total, count = 0.0, 0
            for i, j, sign in _pairs(label, begin, end):
                count += 1
                total += _log_logit(float(sign * (x[j] - x[i])))
            out.append(total / count if count else 0.0)
    return np.array(out, dtype=np.float64)


def reference_gradient(x: np.ndarray, label: np.ndarray, dy: np.ndarray,
                       lengths: Optional[np.ndarray] = None) -> np.ndarray:
    shape = x.shape
    x, label = x.astype(np.float64).ravel(), label.ravel()
    dx = np.zeros(x.shape[0], dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        for s, (begin, end) in enumerate(_sessions(x.shape[0], lengths)):
            count = 0
            for i, j, sign in _pairs(label, begin, end):
                count += 1
                g = sign * float(dy[s]) * _sigmoid(sign * (x[j] - x[i]))
                dx[i] -= g
                dx[j] += g
            if count:
                dx[begin:end] /= count
    return dx.reshape(shape)


# ----------------------------------------------------------------------------------------
# Running the ops
# ----------------------------------------------------------------------------------------

def _run(op_type: str, feeds: dict[str, Any], inputs: list[str],
         ws: Optional[c2lite.Workspace] = None, quiet: bool = True) -> np.ndarray:
    """Run one op with numpy's error state checked after, and with every warning an error
    (``quiet``) or RuntimeWarnings ignored (to check values apart from warnings)."""
    ws = ws or c2lite.Workspace()
    for name, value in feeds.items():
        ws.feed_blob(name, value)
    out = "dX" if op_type.endswith("Gradient") else "Y"
    before = np.geterr()
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("error")
        else:
            warnings.simplefilter("ignore", RuntimeWarning)
        ws.run_operator_once(core.CreateOperator(op_type, inputs, [out], name="under_test"))
    assert np.geterr() == before, "the kernel changed numpy's global error state"
    return ws.fetch_blob(out)


def forward(x, label, lengths=None, quiet=True) -> np.ndarray:
    feeds = {"X": x, "label": label}
    if lengths is not None:
        feeds["lengths"] = lengths
    return _run("PairWiseLoss", feeds, list(feeds), quiet=quiet)


def gradient(x, label, dy, lengths=None, quiet=True) -> np.ndarray:
    feeds = {"X": x, "label": label, "dY": dy}
    if lengths is not None:
        feeds["lengths"] = lengths
    return _run("PairWiseLossGradient", feeds, list(feeds), quiet=quiet)


def _assert_ieee_close(got: np.ndarray, want: np.ndarray) -> None:
    """Same NaN places, same infinities, finite values within float32 accuracy."""
    assert got.dtype == np.float32 and got.shape == want.shape
    want32 = want.astype(np.float32)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want32))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want32))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want32))
    finite = np.isfinite(want32)
    np.testing.assert_allclose(got[finite], want[finite], rtol=2e-5, atol=2e-6)


def _f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


# ----------------------------------------------------------------------------------------
# NaN and Inf
# ----------------------------------------------------------------------------------------

def test_nan_score_poisons_only_its_session():
    x = _f32(0.5, -1.0, 2.0, 0.0, 1.5, -0.5, 3.0)
    label = _f32(1, 0, 2, 1, 0, 2, 1)
    lengths = np.array([3, 4], dtype=np.int32)
    clean_y, clean_dx = forward(x, label, lengths), gradient(x, label, _f32(1, 1), lengths)
    poisoned = x.copy()
    poisoned[4] = np.nan                                   # session 1, label 0
    y = forward(poisoned, label, lengths)
    dx = gradient(poisoned, label, _f32(1, 1), lengths)
    assert np.isnan(y[1]) and y[0] == clean_y[0]           # the other session, bit for bit
    np.testing.assert_array_equal(dx[:3], clean_dx[:3])
    # every item of session 1 has a label different from item 4's: all are paired with it
    assert np.isnan(dx[3:]).all()
    _assert_ieee_close(y, reference_forward(poisoned, label, lengths))


def test_nan_score_spares_items_it_is_not_paired_with():
    x = _f32(np.nan, 1.0, 2.0, 3.0)
    label = _f32(1, 1, 2, 3)                               # item 1 shares item 0's label
    dx = gradient(x, label, _f32(1))
    want = reference_gradient(x, label, _f32(1))
    assert np.isnan(dx[[0, 2, 3]]).all()
    _assert_ieee_close(dx, want)
    # item 1's own pairs (with 2 and 3) are finite, but the session's sums are NaN only
    # where a NaN term landed
    assert np.isnan(dx[1]) == np.isnan(want[1])


@pytest.mark.parametrize("x,label", [
    (_f32(np.inf, 0.0, 1.0), _f32(1, 0, 2)),               # a winning +inf score
    (_f32(-np.inf, 0.0, 1.0), _f32(1, 0, 2)),
    (_f32(np.inf, np.inf, 1.0), _f32(1, 0, 2)),            # inf - inf = NaN
    (_f32(np.inf, -np.inf), _f32(0, 1)),
    (_f32(3e38, -3e38, 0.0), _f32(0, 1, 2)),               # differences beyond float32
    (_f32(0.0, 1.0, 2.0), _f32(np.nan, 0, 1)),             # NaN label: paired, sign -1
    (_f32(0.0, 1.0, 2.0), _f32(np.inf, np.inf, 1)),        # equal infinite labels: paired
    (_f32(0.0, 1.0, 2.0), _f32(-np.inf, 0, np.inf)),
    (_f32(np.inf, np.inf), _f32(0, 1)),                     # a session of equal infinities
])
def test_special_values_follow_ieee(x, label):
    _assert_ieee_close(forward(x, label), reference_forward(x, label))
    dy = _f32(0.7)
    _assert_ieee_close(gradient(x, label, dy), reference_gradient(x, label, dy))


def test_nan_dy_poisons_only_its_session():
    x, label = _f32(0.1, 0.9, -0.3, 2.0), _f32(0, 1, 2, 0)
    lengths = np.array([2, 2], dtype=np.int32)
    dy = _f32(np.nan, 0.5)
    got = gradient(x, label, dy, lengths)
    assert np.isnan(got[:2]).all()
    np.testing.assert_array_equal(got[2:], gradient(x, label, _f32(1, 0.5), lengths)[2:])
    _assert_ieee_close(got, reference_gradient(x, label, dy, lengths))


@pytest.mark.parametrize("inf", [np.inf, -np.inf], ids=["+inf", "-inf"])
def test_infinite_dy_stays_in_its_session(inf):
    x, label = _f32(0.1, 0.9, -0.3, 2.0, 7.0), _f32(0, 1, 2, 0, 0)
    lengths = np.array([2, 3], dtype=np.int32)
    got = gradient(x, label, _f32(inf, 1), lengths)
    np.testing.assert_array_equal(got[2:], gradient(x, label, _f32(0, 1), lengths)[2:])
    assert not np.isfinite(got[:2]).any()


def test_infinite_dy_times_a_saturated_sigmoid_is_a_quiet_nan():
    """Scores -inf and 5 with labels 0 and 1: the pair's sigmoid is exactly 0, and Caffe2's
    sign * dY / (1 + exp(inf)) = inf / inf is NaN: it must come out NaN, silently."""
    x, label, dy = _f32(-np.inf, 5.0, 0.0, 1.0), _f32(0, 1, 0, 1), _f32(np.inf, 1)
    lengths = np.array([2, 2], dtype=np.int32)
    got = gradient(x, label, dy, lengths)
    assert np.isnan(got[:2]).all()
    _assert_ieee_close(got, reference_gradient(x, label, dy, lengths))


_SPECIAL = st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, 80.0, -80.0, 3e38])
_SCORE = st.one_of(st.floats(-30, 30, width=32), _SPECIAL)
# Labels are whole numbers, exact FLT_EPSILON neighbours and non-finite values; labels that
# differ by less than FLT_EPSILON without being equal are test_labels_within_flt_epsilon's.
_LABEL = st.sampled_from([0.0, -0.0, 1.0, 1.0 + 2.0 ** -23, 2.0, np.nan, np.inf, -np.inf])


@st.composite
def _special_case(draw, special_dy: bool = False):
    items = draw(st.lists(st.tuples(_SCORE, _LABEL), min_size=1, max_size=24))
    x = np.array([v for v, _ in items], dtype=np.float32)
    label = np.array([lab for _, lab in items], dtype=np.float32)
    n = x.shape[0]
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
    lengths = np.diff([0, *cuts, n]).astype(np.int32)
    dy_values = st.one_of(st.floats(-2, 2, width=32), _SPECIAL) if special_dy else \
        st.floats(-2, 2, width=32)
    dy = np.array(draw(st.lists(dy_values, min_size=len(lengths), max_size=len(lengths))),
                  dtype=np.float32)
    if draw(st.booleans()):
        x = x.reshape(n, 1)
    return x, label, lengths, dy


@settings(max_examples=150, deadline=None)
@given(_special_case())
def test_fuzz_special_values_against_literal_reference(case):
    """Values only (RuntimeWarnings ignored here; quietness is the next test's)."""
    x, label, lengths, dy = case
    _assert_ieee_close(forward(x, label, lengths, quiet=False),
                       reference_forward(x, label, lengths))
    _assert_ieee_close(gradient(x, label, dy, lengths, quiet=False),
                       reference_gradient(x, label, dy, lengths))


@settings(max_examples=150, deadline=None)
@given(_special_case(special_dy=True))
def test_fuzz_special_values_are_quiet(case):
    """No RuntimeWarning for any mix of special scores, labels and dY (an infinite dY
    included; its values are checked by test_infinite_dy_* only: see the module notes)."""
    x, label, lengths, dy = case
    forward(x, label, lengths)
    gradient(x, label, dy, lengths)


@pytest.mark.parametrize("label", [_f32(1, 1e-8, 0), _f32(1, 0, 1e-8), _f32(0, 1e-8, 1),
                                   _f32(1, 1e-30, 0)], ids=str)
def test_labels_within_flt_epsilon_follow_caffe2_pair_rule(label):
    """Caffe2 skips a pair when |l_i - l_j| < FLT_EPSILON, pair by pair: with labels 1, 1e-8
    and 0, the pairs (1, 1e-8) and (1, 0) count and (1e-8, 0) does not."""
    x = _f32(0, 5, 13)
    _assert_ieee_close(forward(x, label), reference_forward(x, label))
    _assert_ieee_close(gradient(x, label, _f32(1)), reference_gradient(x, label, _f32(1)))


def test_large_session_with_nan_stays_quiet():
    """Past the small-input paths (tiles, batching): NaN still lands where IEEE puts it."""
    rng = np.random.default_rng(3)
    lengths = np.array([700, 2000, 50], dtype=np.int32)
    n = int(lengths.sum())
    x = rng.standard_normal(n).astype(np.float32)
    label = rng.integers(0, 5, n).astype(np.float32)
    clean = forward(x, label, lengths)
    x[900] = np.nan
    x[1000] = np.inf
    y = forward(x, label, lengths)
    assert np.isnan(y[1]) and y[0] == clean[0] and y[2] == clean[2]
    dx = gradient(x, label, _f32(1, 1, 1), lengths)
    assert np.isfinite(dx[:700]).all() and np.isfinite(dx[2700:]).all()
    paired = label[700:2700] != label[900]
    assert np.isnan(dx[700:2700][paired]).all()


# ----------------------------------------------------------------------------------------
# Malformed inputs: one defined outcome each
# ----------------------------------------------------------------------------------------

X3, L3 = _f32(0.1, 0.2, 0.3), _f32(0, 1, 2)
I32 = np.int32

FORWARD_ERRORS = {
    "negative lengths": ({"lengths": np.array([-1, 4], I32)}, "lengths",
                         r"lengths must be non-negative, but lengths\[0\] = -1"),
    "lengths sum": ({"lengths": np.array([1, 1], I32)}, "lengths", r"len_sum == N\. 2 vs 3"),
    "no sessions": ({"lengths": np.zeros(0, I32)}, "lengths", r"len_sum == N\. 0 vs 3"),
    "float lengths": ({"lengths": np.array([1.0, 2.0], np.float32)}, "lengths",
                      r"Tensor type mismatch, caller expects elements to be int while tensor "
                      r"contains float32"),
    "bool lengths": ({"lengths": np.array([True, True, True])}, "lengths",
                     r"Tensor type mismatch.*contains bool"),
    "2-d lengths": ({"lengths": np.array([[3]], I32)}, "lengths",
                    r"lengths\.dim\(\) == 1\. 2 vs 1"),
    "label (N, 2)": ({"label": np.zeros((3, 2), np.float32)}, "label",
                     r"label\.dim\(\) == 1 \|\| \(label\.dim\(\) == 2 && label\.dim32\(1\) == "
                     r"1\)\. label has shape \[3, 2\]"),
    "0-d label": ({"label": np.float32(1)}, "label", r"label\.dim\(\) == 1"),
    "label too long": ({"label": np.zeros(4, np.float32)}, "label",
                       r"label\.dim32\(0\) == N\. 4 vs 3"),
    "X (N, 2)": ({"X": np.zeros((3, 2), np.float32)}, "X",
                 r"1 == D\. 1 vs 2\. Only supports one class"),
    "int labels": ({"label": np.array([0, 1, 2], I32)}, "label",
                   r"Tensor type mismatch.*float32 while tensor contains int32"),
    "float64 X": ({"X": X3.astype(np.float64)}, "X",
                  r"Tensor type mismatch.*float32 while tensor contains float64"),
    # Caffe2's order: lengths are checked before the label
    "lengths before label": ({"lengths": np.array([5], I32), "label": np.zeros(7, np.float32)},
                             "lengths", r"len_sum == N\. 5 vs 3"),
    "label before D": ({"label": np.zeros((3, 2), np.float32), "X": np.zeros((3, 2),
                                                                             np.float32)},
                       "label", r"label\.dim\(\) == 1"),
}


def _expect_error(op_type: str, feeds: dict, inputs: list[str], blob: str, pattern: str):
    ws = c2lite.Workspace()
    out = "dX" if op_type.endswith("Gradient") else "Y"
    ws.feed_blob(out, SENTINEL)
    with pytest.raises(EnforceError, match=pattern) as info:
        _run(op_type, feeds, inputs, ws)
    err = info.value
    assert err.blob == blob and f"(blob '{blob}')" in str(err)
    assert err.op_type == op_type and err.op_name == "under_test"
    np.testing.assert_array_equal(ws.fetch_blob(out), SENTINEL)  # output untouched


@pytest.mark.parametrize("case", sorted(FORWARD_ERRORS))
def test_forward_errors(case):
    changes, blob, pattern = FORWARD_ERRORS[case]
    feeds = {"X": X3, "label": L3, **changes}
    inputs = ["X", "label"] + (["lengths"] if "lengths" in feeds else [])
    _expect_error("PairWiseLoss", feeds, inputs, blob, pattern)


GRADIENT_ERRORS = {
    "0-d X": ({"X": np.float32(1), "label": np.zeros(0, np.float32)}, "X",
              r"N == X\.size\(\)\. 0 vs 1"),
    "X (N, 2)": ({"X": np.zeros((3, 2), np.float32)}, "X", r"N == X\.size\(\)\. 3 vs 6"),
    "label too short": ({"label": _f32(0, 1)}, "label", r"label\.dim32\(0\) == N\. 2 vs 3"),
    "label (N, 2)": ({"label": np.zeros((3, 2), np.float32)}, "label", r"label\.dim\(\) == 1"),
    "negative lengths": ({"lengths": np.array([4, -1], I32), "dY": _f32(1, 1)}, "lengths",
                         r"lengths\[1\] = -1"),
    "lengths sum": ({"lengths": np.array([2, 2], I32), "dY": _f32(1, 1)}, "lengths",
                    r"len_sum == N\. 4 vs 3"),
    "float lengths": ({"lengths": np.array([3.0], np.float64)}, "lengths",
                      r"Tensor type mismatch.*int while tensor contains float64"),
    "dY 2-d": ({"dY": np.ones((1, 1), np.float32)}, "dY", r"dY\.dim\(\) == 1\. 2 vs 1"),
    "dY per session": ({"lengths": np.array([1, 2], I32)}, "dY",
                       r"dY\.dim32\(0\) == len_size\. 1 vs 2"),
    "int labels": ({"label": np.array([0, 1, 2], I32)}, "label",
                   r"Tensor type mismatch.*contains int32"),
    "float64 X": ({"X": X3.astype(np.float64)}, "X", r"Tensor type mismatch.*float64"),
    "float64 dY": ({"dY": np.ones(1, np.float64)}, "dY", r"Tensor type mismatch.*float64"),
    # Caffe2's gradient order: X size, label, then lengths, then dY
    "label before lengths": ({"label": _f32(0, 1), "lengths": np.array([9], I32)}, "label",
                             r"label\.dim32\(0\) == N"),
    "lengths before dY": ({"lengths": np.array([9], I32), "dY": np.ones((2, 2), np.float32)},
                          "lengths", r"len_sum == N\. 9 vs 3"),
}


@pytest.mark.parametrize("case", sorted(GRADIENT_ERRORS))
def test_gradient_errors(case):
    changes, blob, pattern = GRADIENT_ERRORS[case]
    feeds = {"X": X3, "label": L3, "dY": _f32(1), **changes}
    inputs = ["X", "label", "dY"] + (["lengths"] if "lengths" in feeds else [])
    _expect_error("PairWiseLossGradient", feeds, inputs, blob, pattern)


def test_lengths_whose_sum_overflows_are_refused_by_name():
    lengths = np.array([2 ** 62] * 4 + [3], dtype=np.int64)  # sums to 3 modulo 2**64
    _expect_error("PairWiseLoss", {"X": X3, "label": L3, "lengths": lengths},
                  ["X", "label", "lengths"], "lengths", r"len_sum == N|lengths\[0\]")


def test_wider_lengths_dtypes_are_accepted():
    """A deliberate widening over Caffe2 (int32 only): any integer dtype works the same."""
    want = forward(X3, L3, np.array([1, 2], I32))
    for dtype in (np.int64, np.int16, np.uint8, np.uint64):
        np.testing.assert_array_equal(forward(X3, L3, np.array([1, 2], dtype)), want)


# ----------------------------------------------------------------------------------------
# N == 0
# ----------------------------------------------------------------------------------------

EMPTY = np.zeros(0, np.float32)


@pytest.mark.parametrize("x,label,lengths", [
    (EMPTY, EMPTY, None),
    (EMPTY, EMPTY, np.array([0, 0], I32)),                  # still (0,), not (2,)
    (np.zeros((0, 1), np.float32), EMPTY, None),
    (np.float32(2.5), EMPTY, None),                          # a 0-d X takes the N == 0 path
    (np.float32(2.5), EMPTY, np.array([0, 0], I32)),
    (EMPTY, _f32(1, 2, 3), np.array([1, -1], I32)),          # no label or lengths check
    (EMPTY, EMPTY, np.array([0.5], np.float32)),
], ids=["plain", "lengths00", "X(0,1)", "X0d", "X0d-lengths", "unchecked", "float-lengths"])
def test_forward_empty_batch(x, label, lengths):
    y = forward(x, label, lengths)
    assert y.shape == (0,) and y.dtype == np.float32


@pytest.mark.parametrize("x,dy,lengths", [
    (EMPTY, _f32(1), None),
    (np.zeros((0, 1), np.float32), _f32(1), None),
    (EMPTY, np.ones((3, 3), np.float64), np.array([0, 0], I32)),  # dY and lengths unchecked
    (EMPTY, EMPTY, np.array([-4], I32)),
], ids=["plain", "X(0,1)", "unchecked-dY", "unchecked-lengths"])
def test_gradient_empty_batch(x, dy, lengths):
    dx = gradient(x, EMPTY, dy, lengths)
    assert dx.shape == x.shape and dx.dtype == np.float32


def test_gradient_empty_batch_still_checks_label():
    _expect_error("PairWiseLossGradient", {"X": EMPTY, "label": _f32(1, 2), "dY": _f32(1)},
                  ["X", "label", "dY"], "label", r"label\.dim32\(0\) == N\. 2 vs 0")


def test_empty_sessions_and_sessions_without_pairs_are_zero():
    x, label = _f32(0.3, -1.0, 2.0, 5.0, 5.0), _f32(1, 0, 2, 4, 4)
    lengths = np.array([0, 3, 0, 2, 0], I32)
    y = forward(x, label, lengths)
    want = reference_forward(x, label, lengths)
    assert y.shape == (5,) and y[[0, 2, 3, 4]].tolist() == [0, 0, 0, 0] and y[1] > 0
    _assert_ieee_close(y, want)
    dx = gradient(x, label, _f32(1, 1, 1, 1, 1), lengths)
    assert dx[3:].tolist() == [0, 0]


def test_shapes_and_strides_accepted():
    x = np.arange(12, dtype=np.float32)[::3]                 # non-contiguous (4,)
    label = _f32(0, 1, 0, 2)
    want = reference_forward(x, label)
    _assert_ieee_close(forward(x, label), want)
    _assert_ieee_close(forward(x.reshape(4, 1), label.reshape(4, 1)), want)
    _assert_ieee_close(forward(np.ascontiguousarray(x).reshape(4, 1, 1), label), want)
    dx = gradient(x.reshape(4, 1), label, _f32(1))
    assert dx.shape == (4, 1)


# ----------------------------------------------------------------------------------------
# Resources: one 100,000-item session
# ----------------------------------------------------------------------------------------

BIG = 100_000


def _big_inputs(ws: c2lite.Workspace) -> None:
    rng = np.random.default_rng(11)
    ws.feed_blob("X", rng.standard_normal(BIG).astype(np.float32))
    ws.feed_blob("label", rng.standard_normal(BIG).astype(np.float32))  # all labels differ
    ws.feed_blob("Y", SENTINEL)


def _small_check(ws: c2lite.Workspace) -> None:
    x, label = _f32(0.2, -0.4, 1.0, 0.0), _f32(1, 0, 2, 1)
    _assert_ieee_close(_run("PairWiseLoss", {"X": x, "label": label}, ["X", "label"], ws),
                       reference_forward(x, label))
    _assert_ieee_close(_run("PairWiseLossGradient", {"X": x, "label": label, "dY": _f32(1)},
                            ["X", "label", "dY"], ws),
                       reference_gradient(x, label, _f32(1)))


@pytest.mark.slow
def test_one_big_session_runs_in_bounded_memory():
    ws = c2lite.Workspace()
    _big_inputs(ws)
    op = core.CreateOperator("PairWiseLoss", ["X", "label"], ["Y"])
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        start = time.monotonic()
        ws.run_operator_once(op)
        elapsed = time.monotonic() - start
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    y = ws.fetch_blob("Y")
    assert y.shape == (1,) and np.isfinite(y).all() and 0.3 < y[0] < 2.0
    assert peak < 64 * 2 ** 20, f"peak {peak / 2 ** 20:.1f} MiB for {BIG} items"
    assert elapsed < 20


@pytest.mark.slow
def test_ctrl_c_interrupts_a_big_session_promptly():
    # Scores spread this wide defeat the fast quadrature, so the session goes through the
    # tiled path, which takes seconds here (about 6 s): far longer than the 0.2 s before the
    # interrupt. (Narrow scores finish in ~0.1 s, too fast to interrupt at all.)
    ws = c2lite.Workspace()
    rng = np.random.default_rng(11)
    ws.feed_blob("X", (rng.standard_normal(BIG) * 8).astype(np.float32))
    ws.feed_blob("label", rng.integers(0, 5, BIG).astype(np.float32))
    ws.feed_blob("Y", SENTINEL)
    op = core.CreateOperator("PairWiseLoss", ["X", "label"], ["Y"], name="big")
    armed = threading.Event()
    sent: list[float] = []
    late: list[float] = []

    def on_sigint(signum, frame):  # what the default handler does, but only while armed
        if armed.is_set():
            raise KeyboardInterrupt
        late.append(time.monotonic())

    def send() -> None:
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    # Python drops an exception raised inside a gc callback as unraisable, so a SIGINT that
    # lands while another library's callback runs (hypothesis installs one) would be lost
    # whatever the op does; keep the measurement free of them.
    gc_callbacks = gc.callbacks[:]
    gc.callbacks.clear()
    previous = signal.signal(signal.SIGINT, on_sigint)
    timer = threading.Timer(0.2, send)
    try:
        armed.set()
        timer.start()
        start = time.monotonic()
        try:
            ws.run_operator_once(op)
        except KeyboardInterrupt:
            caught = time.monotonic()
        else:
            caught = None
            ran = time.monotonic() - start
        finally:
            armed.clear()
            timer.join()
    finally:
        signal.signal(signal.SIGINT, previous)
        gc.callbacks[:] = gc_callbacks
    assert caught is not None, f"not interrupted: the op ran to the end in {ran:.2f} s (sent {sent}, late {late}, start {start})"
    assert sent and caught - sent[0] < 0.5, f"KeyboardInterrupt {caught - sent[0]:.2f} s late"
    assert caught - start < 1.0, "the op ran far past the interrupt"
    # nothing keeps running: no helper thread, no CPU burnt while we sit idle
    assert not [t for t in threading.enumerate() if "rankloss" in t.name.lower()]
    cpu = time.process_time()
    time.sleep(0.3)
    assert time.process_time() - cpu < 0.1
    np.testing.assert_array_equal(ws.fetch_blob("Y"), SENTINEL)  # output untouched
    _small_check(ws)                                             # workspace still usable
    assert late == []
