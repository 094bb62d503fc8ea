"""CPU kernels for PairWiseLoss / PairWiseLossGradient (Caffe2 rank_loss_op).

Semantics (reference section 6).  For every session and every unordered
pair of its items whose float32 label difference is at least FLT_EPSILON
(``abs(l_i - l_j) < FLT_EPSILON`` skips the pair, evaluated in float32
exactly as the C++ code does; the relation is not transitive), with ``lo``
the lower- and ``hi`` the higher-labelled item::

    Y[s]  = sum logLogit(x_lo - x_hi) / numPairs_s        (0 if no pair)
    dX    : g = dY[s] * sigmoid(x_lo - x_hi); dX[hi] -= g; dX[lo] += g,
            then the session's dX is divided by numPairs_s

where logLogit(z) is 0 below LOG_THRESHOLD = ln(FLT_EPSILON), z above
-LOG_THRESHOLD and softplus(z) in between; the gradient has no cut-offs.

Algorithm.  Everything is computed in float64 and rounded to float32 once
at the end, so the result is within ~1e-7 relative of a float64 evaluation
of the same formula at any size (the original sums in float32 and loses
half its digits on a 20,000-item session).  Per-pair work is cut down by:

* Factorisation: exp(x_j - x_i) = A_j * B_i with A = exp(x - c),
  B = exp(c - x), so a block of pairs needs no per-pair exp:
  T = 1 + B A^T is one small BLAS matrix product, the loss is
  sum(log T) = log of products of ~32 entries (one log per 32 pairs), and
  the gradient needs 1/T plus matrix-vector products.  This is used only
  where every difference in the block is inside the cut-offs and far from
  float64 overflow; other blocks are classified from their score range
  (all below the cut-off: 0; all above: exact linear sum; gradient
  saturated: rank-1 sums) or computed with one exp per pair.
* Label structure: "j is a lower partner of i" is ``rank(j) < P(i)`` where
  P(i) counts the label values sufficiently below label_i (a prefix in
  label order, computed with the float32 rule).  With few distinct label
  values the mask is folded into the matrix product (T = U V^T with one
  extra column per label segment), so masked pairs cost nothing extra.
* Small sessions (<= SMALL_MAX items) are padded side by side in buckets
  of similar length and processed many at a time; larger sessions are
  sorted by (label, score) and cut into L2-sized tiles of (hi rows) x
  (lower-label columns), so only label-differing pairs are visited and
  the score-sorted tiles can be classified against the cut-offs.
* Tiles / session chunks run on a small pool of threads (NumPy and BLAS
  release the GIL); the calling thread works too, so Ctrl-C is seen
  after the current block and the helpers stop after theirs.
* The forward pass also computes the per-item gradient sums (they do not
  depend on dY) and keeps them, with copies of the inputs, for the next
  gradient call on identical inputs (exact content comparison, not a hash).
  Set ``share_work = False`` to disable this.

Boundary note: the cut-off tests are made on float64 differences of the
float32 inputs, so a difference that lies exactly at +-LOG_THRESHOLD after
float32 rounding may be classified differently from the float32 original
(the effect is below float32 resolution of the result).
"""

import math
import os
import threading

import numpy as np

__all__ = [
    "FLT_EPS",
    "LOG_THRESHOLD",
    "max_threads",
    "share_work",
    "pairwise_loss_forward",
    "pairwise_loss_gradient",
]

FLT_EPS = float(np.finfo(np.float32).eps)            # 1.1920929e-07
LOG_THRESHOLD = float(np.log(np.float32(FLT_EPS)))   # ln(FLT_EPS) in float32

# Number of threads used for large inputs (None: CPUs available, at most 4).
max_threads = None
# Compute and keep the gradient sums during the forward pass.
share_work = True

_EPS32 = np.float32(FLT_EPS)
_K = LOG_THRESHOLD              # logLogit: 0 below, identity above -_K
_NARROW = 12.0                  # spread for which 1 - 1/(1+t) keeps 1e-10
_GSAT = 40.0                    # |z| beyond which sigmoid is exp(z) or 1
_FACT_MAX = 700.0               # |z| range usable by exp factorisation
_PROD_GROUP = 32                # factors <= 2**23 each: 32 of them < 2**736

SMALL_MAX = 320                 # sessions up to this length are batched
TINY_MAX = 192                  # whole inputs up to this size: direct path
_N_BLOCKS = 2                   # row blocks covering a sorted session
_SUB_ELEMS = 1 << 17            # pair elements per stacked job group (L2)
_SUB_WASTE = 1.25               # padding allowed in a job group ...
_SUB_SLACK = 1 << 14            # ... or this many elements
_PART_MIN_WORK = 1 << 22        # least padded work worth its own task
_PROD_ROWS = 56                 # (1 + e^12)^56 < 2^1023
_RANK_MAX = 8                   # label segments folded into the matmul
_CHUNK_ELEMS = 1 << 21          # padded elements per batched chunk
_EXPL_CHUNK_ELEMS = 1 << 18     # same, for the one-exp-per-pair path
_FAST_SPREAD = 15.9            # < -LOG_THRESHOLD: no pair hits a cut-off
_FAST_MIN = 1024                # sessions above this length may use it
_FAST_CHUNK_ELEMS = 1 << 20     # nodes x items per quadrature task
_QUAD_H = 0.36                  # trapezoid step: error 2|Gamma(1+2pi i/h)|
_QUAD_ERR = 2e-11               #   ~= 1.6e-11 relative for h = 0.36
_QUAD_TAIL = 1e-13              # truncated lower tail (relative)
_QUAD_UP = 32.0                 # upper tail: exp(-32) relative
_TILE_ROWS = 128
_TILE_COLS = 1024
_PAR_MIN_WORK = 1 << 21         # fewer pair elements than this: 1 thread


def _n_threads():
    if max_threads is not None:
        return max(1, int(max_threads))
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, 4))


# --------------------------------------------------------------------------
# parallel runner
# --------------------------------------------------------------------------

def _run_tasks(tasks, nthreads):
    """Run callables ``task(worker_id, stop)``; the calling thread works too.

    Helpers take tasks from a shared iterator and stop as soon as a task
    fails or the caller is interrupted (long tasks poll ``stop`` between
    blocks); they are always joined before returning, so no thread outlives
    the call and Ctrl-C in the caller surfaces after the current block.
    """
    stop = threading.Event()
    if nthreads <= 1 or len(tasks) <= 1:
        for task in tasks:
            task(0, stop)
        return
    lock = threading.Lock()
    errors = []
    feed = iter(tasks)

    def work(wid):
        while not stop.is_set():
            with lock:
                task = next(feed, None)
            if task is None:
                return
            task(wid, stop)

    def helper(wid):
        try:
            work(wid)
        except BaseException as exc:  # re-raised by the caller below
            errors.append(exc)
            stop.set()

    helpers = [threading.Thread(target=helper, args=(w,), daemon=True,
                                name="c2lite-rankloss-%d" % w)
               for w in range(1, min(nthreads, len(tasks)))]
    for th in helpers:
        th.start()
    try:
        work(0)
    except BaseException:
        stop.set()
        raise
    finally:
        for th in helpers:
            th.join()
    if errors:
        raise errors[0]


# --------------------------------------------------------------------------
# label structure
# --------------------------------------------------------------------------

def _prefix_counts(u):
    """For ascending distinct finite float32 values ``u``, the number of
    values b with float32(u[a] - u[b]) >= FLT_EPS, for every a.

    float32 subtraction is monotone, so these b form a prefix; found by a
    vectorised binary search evaluating the difference in float32.
    """
    m = u.shape[0]
    lo = np.zeros(m, dtype=np.int64)
    hi = np.arange(m, dtype=np.int64)
    while True:
        act = lo < hi
        if not act.any():
            return lo
        mid = (lo + hi) // 2
        ok = (u - u[mid]) >= _EPS32
        lo = np.where(act & ok, mid + 1, lo)
        hi = np.where(act & ~ok, mid, hi)


def _value_index(lab):
    """Distinct finite label values (ascending float32) and each label's
    index among them (labels that are not finite get an arbitrary index)."""
    fin = np.isfinite(lab)
    allfin = bool(fin.all())
    src = lab if allfin else lab[fin]
    if src.size == 0:
        return np.zeros(0, np.float32), np.zeros(lab.shape[0], np.int64)
    lo, hi = float(src.min()), float(src.max())
    if 0.0 <= lo and hi < 4096.0:
        li = src.astype(np.int64)
        if np.array_equal(li, src):
            # small non-negative integers: counting instead of sorting
            present = np.bincount(li, minlength=int(hi) + 1) > 0
            u = np.flatnonzero(present).astype(np.float32)
            lut = np.cumsum(present) - 1
            if allfin:
                return u, lut[li]
            v = np.zeros(lab.shape[0], np.int64)
            v[fin] = lut[li]
            return u, v
    u = np.unique(src)
    u = u[np.concatenate(([True], u[1:] != u[:-1]))]   # -0.0 == 0.0
    v = np.searchsorted(u, lab)
    np.minimum(v, max(u.shape[0] - 1, 0), out=v)
    return u, v


# --------------------------------------------------------------------------
# per-pair formulas
# --------------------------------------------------------------------------

def _log_logit(z):
    """logLogit elementwise in float64 (NaN propagates, as in C++)."""
    with np.errstate(over="ignore", invalid="ignore"):
        sp = np.log1p(np.exp(z))
        return np.where(z < _K, 0.0, np.where(z > -_K, z, sp))


def _sigmoid(z):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


def _explicit_block(z, mask, need_loss, need_grad):
    """One exp per pair.  ``z = x_lo - x_hi`` (..., R, C) and ``mask`` of
    counted pairs; returns (loss sum over the last two axes, hi sums over
    the last axis, lo sums over the axis before it)."""
    loss = hi = lo = None
    if need_loss:
        f = _log_logit(z)
        f *= mask
        loss = f.sum(axis=(-2, -1))
    if need_grad:
        s = _sigmoid(z)
        s *= mask
        hi = s.sum(axis=-1)
        lo = s.sum(axis=-2)
    return loss, hi, lo


# --------------------------------------------------------------------------
# literal path: the original loop order, any values (NaN / inf included)
# --------------------------------------------------------------------------

def _literal_rows(x64, lab, sid, r0, r1, c0, res, need_loss, need_grad):
    """Pairs (i, j) with r0 <= i < r1, c0 <= j < i, same session; exactly
    the original's rule, sign and formulas (evaluated in float64)."""
    loss, npairs, gsum = res
    xi = x64[r0:r1, None]
    xj = x64[None, c0:r1]
    li = lab[r0:r1, None]
    lj = lab[None, c0:r1]
    with np.errstate(invalid="ignore"):
        cnt = ~(np.abs(li - lj) < _EPS32)
    cnt &= (np.arange(c0, r1)[None, :] < np.arange(r0, r1)[:, None])
    cnt &= sid[None, c0:r1] == sid[r0:r1, None]
    srow = sid[r0:r1]
    np.add.at(npairs, srow, cnt.sum(axis=1))
    sgn = np.where(li > lj, 1.0, -1.0)
    with np.errstate(invalid="ignore"):
        z = sgn * (xj - xi)
    if need_loss:
        f = np.where(cnt, _log_logit(z), 0.0)
        np.add.at(loss, srow, f.sum(axis=1))
    if need_grad:
        w = np.where(cnt, sgn * _sigmoid(z), 0.0)
        gsum[r0:r1] -= w.sum(axis=1)
        gsum[c0:r1] += w.sum(axis=0)


def _literal_session(x64, lab, sid, o, n, res, need_loss, need_grad):
    r0 = o
    while r0 < o + n:
        rows = max(1, min(o + n - r0, (1 << 19) // max(1024, r0 + 1 - o)))
        _literal_rows(x64, lab, sid, r0, r0 + rows, o, res,
                      need_loss, need_grad)
        r0 += rows


# --------------------------------------------------------------------------
# tiny inputs: one dense block
# --------------------------------------------------------------------------

def _tiny(x32, lab, offs, res, need_loss, need_grad):
    """Whole input (N <= TINY_MAX) as one N x N block, narrow scores."""
    loss, npairs, gsum = res
    n = x32.shape[0]
    x64 = x32.astype(np.float64)
    mask = np.subtract.outer(lab, lab) >= _EPS32          # i hi, j lo
    multi = offs.shape[0] > 2
    if multi:
        sid = np.repeat(np.arange(offs.shape[0] - 1), np.diff(offs))
        mask &= sid[:, None] == sid[None, :]
    c = 0.5 * (float(x64.max()) + float(x64.min()))
    a = np.exp(x64 - c)
    b = 1.0 / a
    t = np.multiply.outer(b, a)
    t *= mask
    t += 1.0
    cnt = np.count_nonzero(mask, axis=1)
    if multi:
        starts = offs[:-1]
        ne = starts < offs[1:]
        npairs[ne] = np.add.reduceat(cnt, starts[ne])
    else:
        npairs[0] = cnt.sum()
    if need_loss:
        rows = np.log(t).sum(axis=1)
        if multi:
            loss[ne] = np.add.reduceat(rows, starts[ne])
        else:
            loss[0] = rows.sum()
    if need_grad:
        np.divide(1.0, t, out=t)
        gsum[:] = t.sum(axis=1) - t.sum(axis=0)


# --------------------------------------------------------------------------
# small sessions: padded buckets
# --------------------------------------------------------------------------

class _Batch(object):
    """Batched path for sessions of at most SMALL_MAX items.

    Sessions of similar length are padded side by side, (nb, lb), and each
    chunk of them is sorted by label value inside every session.  Rows
    (hi items) with no lower partner then form a prefix, and the lower
    partners of row i are the prefix [0, P(i)) with P non-decreasing: the
    counted pairs form a staircase.

    Narrow sessions (score spread <= _NARROW) use T = 1 + B_i A_j on
    counted pairs and exactly 1 elsewhere: the loss is sum(log T), computed
    as the log of column products, and since 1/T = 1 - sigmoid the sigmoid
    sums are (count - sum(1/T)) along rows and columns (sigmoid >= e^-12
    there, so this loses less than 1e-10 relative).

    * With at most _RANK_MAX label segments ("ranked"), each step of the
      staircase (the hi items of one segment x all items of lower
      segments) is a full rectangle; the rectangles of a chunk are sorted
      by shape and cut into L2-sized groups, so padding is small and no
      mask is needed.  Very short sessions use a single block with the mask
      folded into the product: T = U V^T, U = [1, B_i [s < nseg_i]],
      V = [1, A_j [seg_j == s]].
    * Otherwise (many distinct label values) the staircase is covered by
      _N_BLOCKS row blocks with an explicit mask; sessions with a wider
      score spread use one exp per pair on the same blocks.
    """

    def __init__(self, x32, lab, offs, lens, res, need_loss, need_grad):
        n = x32.shape[0]
        self.res = res
        self.need_loss = need_loss
        self.need_grad = need_grad
        self.offs = offs
        self.lens = lens
        self.xext = np.append(x32, np.float32(0))
        u, v = _value_index(lab)
        m = u.shape[0]
        self.m = m
        pv = _prefix_counts(u)
        cuts = np.unique(pv[pv > 0])
        self.rank = cuts.shape[0]
        self.ranked = self.rank <= _RANK_MAX
        self.sh = int(SMALL_MAX).bit_length()
        kdt = np.int64 if ((m + 1) << self.sh) >= 2 ** 31 else np.int32
        self.vext = np.append(v, m).astype(kdt)
        if self.ranked:
            # segment of each label value, and number of segments below it;
            # padding: segment rank (never a lower partner), nseg 0
            seg_v = np.searchsorted(cuts, np.arange(m), "right")
            nseg_v = np.searchsorted(cuts, pv, "right")
            self.klo = np.append(seg_v, self.rank).astype(np.int32)
            self.khi = np.append(nseg_v, 0).astype(np.int32)
        else:
            self.klo = np.arange(m + 1, dtype=np.int64)
            self.khi = np.append(pv, 0).astype(np.int64)
        self.dummy = n

    def task(self, sess, lb, wide):
        def run(_wid, _stop):
            self._chunk(sess, lb, wide)
        return run

    def part_task(self, sess):
        def run(_wid, stop):
            self._part(sess, stop)
        return run

    def _layout(self, sess, lb):
        """Gather the chunk, sort each session by label value (padding
        last) and return (idx, valid, lens, klo, khi, key)."""
        ar = np.arange(lb)
        lens = self.lens[sess]
        valid = ar[None, :] < lens[:, None]
        idx = np.where(valid, self.offs[sess][:, None] + ar[None, :],
                       self.dummy)
        key = self.vext[idx]
        key <<= self.sh
        key |= ar.astype(key.dtype)
        key.sort(axis=1)
        perm = (key & ((1 << self.sh) - 1)).astype(np.intp)
        key >>= self.sh
        idx = np.take_along_axis(idx, perm, axis=1)
        return idx, valid, lens, self.klo[key], self.khi[key], key

    def _chunk(self, sess, lb, wide):
        loss, npairs, gsum = self.res
        nb = sess.shape[0]
        idx, valid, lens, klo, khi, key = self._layout(sess, lb)
        xg = self.xext[idx].astype(np.float64)
        st = (np.zeros(nb) if self.need_loss else None,
              np.zeros((nb, lb + 1)) if self.need_grad else None)
        if wide:
            self._blocks(st, sess, lb, valid, lens, klo, khi, key, xg, None)
        else:
            xg -= self.center[sess][:, None]
            xg *= valid
            a = np.zeros((nb, lb + 1))      # column lb: dead slot, zero
            b = np.zeros((nb, lb + 1))
            np.exp(xg, out=a[:, :lb])
            a[:, :lb] *= valid
            np.exp(-xg, out=b[:, :lb])
            b[:, :lb] *= valid
            self._blocks(st, sess, lb, valid, lens, klo, khi, key, a, b)
        if self.need_loss:
            loss[sess] = st[0]
        if self.need_grad:
            gsum[idx[valid]] = st[1][:, :lb][valid]

    def _part(self, sess, stop):
        """Ranked narrow sessions ``sess``: every step of each session's
        staircase (hi rows of one segment x all lower-segment items) is a
        job; jobs of similar shape are stacked into L2-sized groups."""
        loss, npairs, gsum = self.res
        need_loss, need_grad = self.need_loss, self.need_grad
        k = self.rank
        lens = self.lens[sess]
        ns = sess.shape[0]
        loc = np.zeros(ns + 1, dtype=np.int64)
        np.cumsum(lens, out=loc[1:])
        npart = int(loc[-1])
        # 1. local order: sessions one after another, each sorted by value
        perm = np.empty(npart, dtype=np.int64)
        lbs = (lens + 7) // 8 * 8
        order = np.argsort(lbs, kind="stable")
        bounds = np.flatnonzero(np.diff(lbs[order])) + 1
        bounds = np.concatenate(([0], bounds, [ns]))
        for bi in range(bounds.shape[0] - 1):
            lb = int(lbs[order[bounds[bi]]])
            per = max(1, _CHUNK_ELEMS // (lb * lb))
            for c0 in range(int(bounds[bi]), int(bounds[bi + 1]), per):
                ch = order[c0:min(c0 + per, int(bounds[bi + 1]))]
                idx, valid, _, _, _, _ = self._layout(sess[ch], lb)
                dest = loc[ch][:, None] + np.arange(lb)[None, :]
                perm[dest[valid]] = idx[valid]
        vv = self.vext[perm]
        klo = self.klo[vv]
        khi = self.khi[vv]
        del vv
        # 2. per session and segment: items below it, hi rows of it
        sid = np.repeat(np.arange(ns), lens)
        cnt = np.bincount(sid * (k + 1) + klo, minlength=ns * (k + 1))
        cend = np.cumsum(cnt.reshape(ns, k + 1), axis=1) - cnt.reshape(ns, k + 1)
        cnt = np.bincount(sid * (k + 1) + khi, minlength=ns * (k + 1))
        cnt = cnt.reshape(ns, k + 1)
        hst = np.cumsum(cnt, axis=1) - cnt
        del sid, klo, khi
        npairs[sess] = (cnt[:, 1:] * cend[:, 1:]).sum(axis=1)
        # 3. factors; zero padding after the end gives T = 1
        xs = self.xext[perm].astype(np.float64)
        xs -= np.repeat(self.center[sess], lens)
        jr = cnt[:, 1:].ravel()
        jc = cend[:, 1:].ravel()
        pad = int(max(jr.max(initial=0), jc.max(initial=0))) + 1
        bpad = np.zeros(npart + pad)
        np.exp(-xs, out=bpad[:npart])
        apad = np.zeros(npart + pad)
        np.exp(xs, out=apad[:npart])
        del xs
        # 4. jobs (session, segment), sorted by shape
        jobs = np.flatnonzero((jr > 0) & (jc > 0))
        jses = jobs // k
        jrs = loc[jses] + hst[:, 1:].ravel()[jobs]
        jr = jr[jobs]
        jc = jc[jobs]
        o = np.lexsort((jr, jc // 8))
        jses, jrs, jr, jc = jses[o], jrs[o], jr[o], jc[o]
        jcs = loc[jses]
        acc = np.zeros(npart + pad) if need_grad else None
        lsum = np.zeros(ns) if need_loss else None
        nj = jr.shape[0]
        i = 0
        while i < nj:
            if stop.is_set():
                return
            # greedy: extend the group while it stays L2-sized and the
            # padding stays small (absolute slack for groups of tiny jobs)
            j1 = min(nj, i + 2048)
            mr = np.maximum.accumulate(jr[i:j1])
            mc = np.maximum.accumulate(jc[i:j1])
            area = np.arange(1, j1 - i + 1) * mr * mc
            real = np.cumsum(jr[i:j1] * jc[i:j1])
            bad = (area > _SUB_ELEMS) | ((area > real * _SUB_WASTE)
                                         & (area > real + _SUB_SLACK))
            bad[0] = False
            j = i + (int(np.argmax(bad)) if bad.any() else j1 - i)
            g = slice(i, j)
            ng = j - i
            rb = int(mr[ng - 1])
            cb = int(mc[ng - 1])
            ar = np.arange(rb)
            ac = np.arange(cb)
            rok = ar[None, :] < jr[g][:, None]
            cok = ac[None, :] < jc[g][:, None]
            ut = np.empty((ng, 2, rb))
            ut[:, 1, :] = 1.0
            np.multiply(_windows(bpad, rb)[jrs[g]], rok, out=ut[:, 0, :])
            w = np.empty((ng, 2, cb))
            w[:, 1, :] = 1.0
            np.multiply(_windows(apad, cb)[jcs[g]], cok, out=w[:, 0, :])
            t = np.matmul(ut.transpose(0, 2, 1), w)     # 1 + B A, (ng,rb,cb)
            if need_grad:
                np.divide(1.0, t, out=t)
                hi = np.matmul(t, np.ones(cb))
                lo = np.matmul(np.ones(rb), t)
                hi -= cb              # minus the sigmoid sums as hi
                lo -= rb              # minus the sigmoid sums as lo
                rpos = jrs[g][:, None] + ar[None, :]
                acc[rpos[rok]] += hi[rok]
                cpos = jcs[g][:, None] + ac[None, :]
                if np.unique(jses[g]).shape[0] == ng:
                    acc[cpos[cok]] -= lo[cok]
                else:                 # a session twice: columns repeat
                    np.subtract.at(acc, cpos[cok], lo[cok])
                if need_loss:         # sum log T = -sum log(1/T)
                    np.subtract.at(lsum, jses[g], _log_prod_rows(t))
            elif need_loss:
                np.add.at(lsum, jses[g], _log_prod_rows(t))
            i = j
        if need_loss:
            loss[sess] = lsum
        if need_grad:
            gsum[perm] = acc[:npart]

    def _reduce(self, st, t, grp, rpc):
        """Loss and sigmoid sums of a block T (g, rb, cb) of 1 + t values
        (1 on pairs that do not count) for sessions grp, rows at rpc."""
        g, rb, cb = t.shape
        if self.need_grad:
            np.divide(1.0, t, out=t)
            hi = np.matmul(t, np.ones(cb))
            lo = np.matmul(np.ones(rb), t)
            hi -= cb                  # minus the sigmoid sums as hi
            lo -= rb                  # minus the sigmoid sums as lo
            acc = st[1]
            acc[grp[:, None], rpc] += hi
            acc[grp, :cb] -= lo
            if self.need_loss:        # sum log T = -sum log(1/T)
                st[0][grp] -= _log_prod_rows(t)
        elif self.need_loss:
            st[0][grp] += _log_prod_rows(t)

    def _blocks(self, st, sess, lb, valid, lens, klo, khi, key, a, b):
        """Staircase covered by _N_BLOCKS row blocks with an explicit mask:
        T = 1 + B A^T masked (narrow, a/b given) or one exp per pair
        (a is then the float64 scores)."""
        npairs = self.res[1]
        nb = sess.shape[0]
        # P(i): items whose klo is below khi_i (rows are sorted by value)
        base = np.arange(nb, dtype=np.int64)[:, None] * (self.m + 1)
        flat = (key + base).ravel()
        p = np.searchsorted(flat, (khi + base).ravel(), "left")
        p = p.reshape(nb, lb) - np.arange(nb)[:, None] * lb
        p *= valid
        npairs[sess] = p.sum(axis=1)
        rows = np.arange(nb)
        first = np.count_nonzero(p == 0, axis=1) - (lb - lens)
        khx = np.zeros((nb, lb + 1), dtype=khi.dtype)
        khx[:, :lb] = khi * valid
        nblk = 1 if lb <= 24 else _N_BLOCKS
        for blk in range(nblk):
            r0 = first + ((lens - first) * blk) // nblk
            r1 = first + ((lens - first) * (blk + 1)) // nblk
            rl = r1 - r0
            rb = int(rl.max())
            if rb == 0:
                continue
            cend = np.where(rl > 0, p[rows, np.maximum(r1 - 1, 0)], 0)
            cb = int(cend.max())
            if cb == 0:
                continue
            ar = np.arange(rb)
            rpc = np.where(ar[None, :] < rl[:, None], r0[:, None] + ar[None, :],
                           lb)
            khr = khx[rows[:, None], rpc]
            m = klo[:, None, :cb] < khr[:, :, None]
            if b is None:
                xr = a[rows[:, None], np.minimum(rpc, lb - 1)]
                z = a[:, None, :cb] - xr[:, :, None]
                ls, hi, lo = _explicit_block(z, m, self.need_loss,
                                             self.need_grad)
                if self.need_loss:
                    st[0][:] += ls
                if self.need_grad:
                    st[1][rows[:, None], rpc] -= hi
                    st[1][:, :cb] += lo
                continue
            t = np.matmul(b[rows[:, None], rpc][:, :, None],
                          a[:, None, :cb])
            t *= m
            t += 1.0
            self._reduce(st, t, rows, rpc)


def _log_prod_rows(t):
    """Per leading index, the sum of log(t) over a (g, rb, cb) block whose
    entries all lie in [(1 + e^_NARROW)^-1, 1 + e^_NARROW].  Rows are
    multiplied together in place (pairwise halving, long inner loops) in
    groups of at most _PROD_ROWS, so there is one log per column per
    group; t is overwritten."""
    g, rb, cb = t.shape
    out = np.zeros(g)
    for r0 in range(0, rb, _PROD_ROWS):
        blk = t[:, r0:min(rb, r0 + _PROD_ROWS)]
        h = blk.shape[1]
        while h > 1:
            half = h // 2
            np.multiply(blk[:, :half], blk[:, h - half:h], out=blk[:, :half])
            h -= half
        row = blk[:, 0]
        np.log(row, out=row)
        out += row.sum(axis=1)
    return out


def _windows(v, width):
    """Read-only (len(v) - width + 1, width) view of sliding windows."""
    st = v.strides[0]
    return np.lib.stride_tricks.as_strided(
        v, shape=(v.shape[0] - width + 1, width), strides=(st, st),
        writeable=False)


def _plan_small(batch, sess, lens, spread, nthreads, tasks):
    """Make the tasks of the batched path; returns the padded work."""
    if sess.shape[0] == 0:
        return 0
    work = 0
    narrow = spread[sess] <= _NARROW
    if batch.ranked:
        grp = sess[narrow]
        if grp.shape[0]:
            # parts of similar work, each a task over whole sessions
            w = lens[grp].astype(np.float64) ** 2
            work += int(w.sum())
            nparts = max(1, min(grp.shape[0], 2 * nthreads,
                                int(w.sum()) // _PART_MIN_WORK))
            cuts = np.searchsorted(np.cumsum(w),
                                   w.sum() * np.arange(1, nparts) / nparts)
            for part in np.split(grp, cuts):
                if part.shape[0]:
                    tasks.append(batch.part_task(part))
        rest = [(sess[~narrow], True)]
    else:
        rest = [(sess[narrow], False), (sess[~narrow], True)]
    for grp, wide in rest:
        if grp.shape[0] == 0:
            continue
        lb_all = (lens[grp] + 7) // 8 * 8
        order = np.argsort(lb_all, kind="stable")
        grp = grp[order]
        lb_all = lb_all[order]
        bounds = np.flatnonzero(np.diff(lb_all)) + 1
        bounds = np.concatenate(([0], bounds, [grp.shape[0]]))
        cap = _EXPL_CHUNK_ELEMS if wide else _CHUNK_ELEMS
        for k in range(bounds.shape[0] - 1):
            s0, s1 = int(bounds[k]), int(bounds[k + 1])
            lb = int(lb_all[s0])
            per = max(1, cap // (lb * lb))
            for c0 in range(s0, s1, per):
                chunk = grp[c0:min(c0 + per, s1)]
                work += chunk.shape[0] * lb * lb
                tasks.append(batch.task(chunk, lb, wide))
    return work


# --------------------------------------------------------------------------
# large sessions: sorted tiles
# --------------------------------------------------------------------------

class _Large(object):
    """One large session sorted by (label, score) and cut into tiles of
    (hi rows) x (lower-label columns)."""

    def __init__(self, x32, lab, o, n, s, res, need_loss, need_grad,
                 acc_slot, nacc):
        self.o, self.n, self.s = o, n, s
        self.res = res
        self.need_loss = need_loss
        self.need_grad = need_grad
        xs = x32[o:o + n]
        ls = lab[o:o + n]
        order = np.lexsort((xs, ls))
        self.order = order
        xo = xs[order].astype(np.float64)
        lo = ls[order]
        self.xo = xo
        new = np.empty(n, dtype=bool)
        new[0] = True
        np.not_equal(lo[1:], lo[:-1], out=new[1:])
        starts = np.flatnonzero(new)
        pv = _prefix_counts(lo[starts])
        pitem = np.append(starts, n)[pv]
        vidx = np.cumsum(new) - 1
        self.p = pitem[vidx]                        # lower partners: [0, p)
        res[1][s] = int(self.p.sum())
        lo_x, hi_x = float(xo.min()), float(xo.max())
        # global factors when every exponent stays far from overflow
        if hi_x - lo_x <= _FACT_MAX:
            c = 0.5 * (lo_x + hi_x)
            self.a = np.exp(xo - c)
            self.b = np.exp(c - xo)
            self.ua = np.stack([self.b, np.ones(n)], axis=1)   # (n, 2)
            self.wa = np.stack([self.a, np.ones(n)], axis=0)   # (2, n)
        else:
            self.a = None
        # per-worker accumulators: loss (scalar slot) and item sums
        self.lacc = np.zeros(nacc)
        self.gacc = np.zeros((nacc, n)) if need_grad else None
        self.acc_slot = acc_slot

    def plan(self, tasks):
        n = self.n
        p = self.p
        work = 0
        r = int(np.searchsorted(p, 0, "right"))
        while r < n:
            p0 = int(p[r])
            r1 = min(n, r + _TILE_ROWS,
                     int(np.searchsorted(p, p0 + _TILE_ROWS, "right")))
            p1 = int(p[r1 - 1])
            for c0 in range(0, p0, _TILE_COLS):
                c1 = min(p0, c0 + _TILE_COLS)
                tasks.append(self._tile_task(r, r1, c0, c1, False))
                work += (r1 - r) * (c1 - c0)
            for c0 in range(p0, p1, _TILE_COLS):
                c1 = min(p1, c0 + _TILE_COLS)
                tasks.append(self._tile_task(r, r1, c0, c1, True))
                work += (r1 - r) * (c1 - c0)
            r = r1
        return work

    def _tile_task(self, r0, r1, c0, c1, stair):
        def task(wid, _stop):
            self._tile(wid, r0, r1, c0, c1, stair)
        return task

    def _tile(self, wid, r0, r1, c0, c1, stair):
        xo = self.xo
        xi = xo[r0:r1]
        xj = xo[c0:c1]
        ga = self.gacc[wid] if self.need_grad else None
        if stair:
            m = np.arange(c0, c1)[None, :] < self.p[r0:r1, None]
            z = xj[None, :] - xi[:, None]
            ls, hi, lo = _explicit_block(z, m, self.need_loss,
                                         self.need_grad)
            if self.need_loss:
                self.lacc[wid] += ls
            if self.need_grad:
                ga[r0:r1] -= hi
                ga[c0:c1] += lo
            return
        self._full(wid, r0, r1, c0, c1, ga, self.need_loss, self.need_grad)

    def _full(self, wid, r0, r1, c0, c1, ga, need_loss, need_grad):
        xo = self.xo
        xi = xo[r0:r1]
        xj = xo[c0:c1]
        # score-sorted within label groups: ranges of the tile's differences
        zmin = float(xj.min()) - float(xi.max())
        zmax = float(xj.max()) - float(xi.min())
        f_fact = _K <= zmin and zmax <= -_K
        g_fact = -_FACT_MAX <= zmin and zmax <= _FACT_MAX
        nr, nc = r1 - r0, c1 - c0
        if (f_fact or not need_loss) and g_fact and self.a is not None:
            t = np.matmul(self.ua[r0:r1], self.wa[:, c0:c1])   # 1 + B A
            if need_loss:
                self.lacc[wid] += _log_prod_sum(t)
            if need_grad:
                np.divide(1.0, t, out=t)
                ga[r0:r1] -= self.b[r0:r1] * np.matmul(t, self.a[c0:c1])
                ga[c0:c1] += self.a[c0:c1] * np.matmul(self.b[r0:r1], t)
            return
        if need_loss:
            if zmax < _K:
                pass
            elif zmin > -_K:
                self.lacc[wid] += nr * float(xj.sum()) - nc * float(xi.sum())
            elif f_fact and self.a is not None:
                t = np.matmul(self.ua[r0:r1], self.wa[:, c0:c1])
                self.lacc[wid] += _log_prod_sum(t)
            elif nr * nc > 4096 and (nr > 1 or nc > 1):
                self._split(wid, r0, r1, c0, c1, ga, True, False)
            else:
                z = xj[None, :] - xi[:, None]
                self.lacc[wid] += float(_log_logit(z).sum())
        if need_grad:
            if zmax < -_GSAT:
                mj = float(xj.max())
                mi = float(xi.min())
                ga[r0:r1] -= np.exp(mj - xi) * float(np.exp(xj - mj).sum())
                ga[c0:c1] += np.exp(xj - mi) * float(np.exp(mi - xi).sum())
            elif zmin > _GSAT:
                ga[r0:r1] -= nc
                ga[c0:c1] += nr
            elif g_fact and self.a is not None:
                t = np.matmul(self.ua[r0:r1], self.wa[:, c0:c1])
                np.divide(1.0, t, out=t)
                ga[r0:r1] -= self.b[r0:r1] * np.matmul(t, self.a[c0:c1])
                ga[c0:c1] += self.a[c0:c1] * np.matmul(self.b[r0:r1], t)
            elif nr * nc > 4096:
                self._split(wid, r0, r1, c0, c1, ga, False, True)
            else:
                s = _sigmoid(xj[None, :] - xi[:, None])
                ga[r0:r1] -= s.sum(axis=1)
                ga[c0:c1] += s.sum(axis=0)

    def _split(self, wid, r0, r1, c0, c1, ga, loss, grad):
        if c1 - c0 >= r1 - r0:
            cm = (c0 + c1) // 2
            self._full(wid, r0, r1, c0, cm, ga, loss, grad)
            self._full(wid, r0, r1, cm, c1, ga, loss, grad)
        else:
            rm = (r0 + r1) // 2
            self._full(wid, r0, rm, c0, c1, ga, loss, grad)
            self._full(wid, rm, r1, c0, c1, ga, loss, grad)

    def finish(self):
        loss, npairs, gsum = self.res
        if self.need_loss:
            loss[self.s] = float(self.lacc.sum())
        if self.need_grad:
            g = self.gacc.sum(axis=0)
            gsum[self.o + self.order] = g


class _Fast(object):
    """A large session whose score spread keeps every difference inside the
    logLogit cut-offs: separable quadrature, O(nodes * n) work.

    With y = exp(c - x) (one per item), for a hi item i and a lo item j::

        sigmoid(x_j - x_i)  = y_i / (y_j + y_i)
        softplus(x_j - x_i) = integral_0^y_i dbeta / (y_j + beta)

    and 1/v = integral exp(t - v e^t) dt, discretised by the trapezoidal
    rule on t_n = T0 + n h (s_n = e^t_n), is a sum of separable terms::

        1/v ~= h * sum_n s_n exp(-s_n v)

    with relative error below _QUAD_ERR for every v in [ymin, 2 ymax]
    (discretisation 2|Gamma(1 + 2 pi i / h)|, tails below 1e-13).  Every
    pair term is therefore reproduced to that relative accuracy with all
    terms positive, so sums keep it too::

        softplus ~= h sum_n exp(-s_n y_j) (1 - exp(-s_n y_i))
        sigmoid  ~= h y_i sum_n s_n exp(-s_n y_j) exp(-s_n y_i)

    Sums over the lower partners of each hi item (a prefix of label
    values) and over the upper partners of each lo item (a suffix) are
    then prefix / suffix sums over label values.
    """

    def __init__(self, x32, lab, o, n, s, res, need_loss, need_grad, nacc):
        self.o, self.n, self.s = o, n, s
        self.res = res
        self.need_loss = need_loss
        self.need_grad = need_grad
        ls = lab[o:o + n]
        order = np.argsort(ls, kind="stable")
        self.order = order
        lo = ls[order]
        xo = x32[o:o + n][order].astype(np.float64)
        new = np.empty(n, dtype=bool)
        new[0] = True
        np.not_equal(lo[1:], lo[:-1], out=new[1:])
        starts = np.flatnonzero(new)
        m = starts.shape[0]
        pv = _prefix_counts(lo[starts])
        counts = np.diff(np.append(starts, n))
        sext = np.append(starts, n)
        res[1][s] = int((counts * sext[pv]).sum())
        self.starts = starts
        self.counts = counts
        self.pv = pv
        # lo value w: hi values are those with pv > w, a suffix from qv[w]
        self.qv = np.searchsorted(pv, np.arange(m), "right")
        self.m = m
        hi_x, lo_x = float(xo.max()), float(xo.min())
        c = 0.5 * (hi_x + lo_x)
        self.y = np.exp(c - xo)
        ymin = math.exp(c - hi_x)
        ymax = math.exp(c - lo_x)
        t0 = math.log(_QUAD_TAIL / (2.0 * ymax))
        t1 = math.log(_QUAD_UP / ymin)
        k = int(math.ceil((t1 - t0) / _QUAD_H)) + 1
        self.snodes = np.exp(t0 + _QUAD_H * np.arange(k))
        self.lacc = np.zeros(nacc)
        self.gacc = np.zeros((nacc, n)) if need_grad else None

    def plan(self, tasks):
        k = self.snodes.shape[0]
        per = max(1, min(k, _FAST_CHUNK_ELEMS // self.n))
        nchunks = -(-k // per)
        per = -(-k // nchunks)
        for a in range(0, k, per):
            tasks.append(self._task(a, min(k, a + per)))
        return k * self.n * 8

    def _task(self, a, b):
        def task(wid, _stop):
            self._nodes(wid, a, b)
        return task

    def _nodes(self, wid, a, b):
        sn = self.snodes[a:b]
        y = self.y
        starts = self.starts
        sy = np.multiply.outer(sn, y)                     # (k, n)
        e = np.exp(-sy)
        vs = np.add.reduceat(e, starts, axis=1)           # (k, m)
        ch = np.zeros((b - a, self.m + 1))
        np.cumsum(vs, axis=1, out=ch[:, 1:])
        chp = ch[:, self.pv]          # per hi value: sum of E over lo partners
        if self.need_loss:
            np.expm1(-sy, out=sy)
            fs = np.add.reduceat(sy, starts, axis=1)      # sum of -(1 - e)
            self.lacc[wid] -= _QUAD_H * float(np.vdot(fs, chp))
        if self.need_grad:
            np.multiply(e, y, out=sy)
            ys = np.add.reduceat(sy, starts, axis=1)
            sfx = np.zeros((b - a, self.m + 1))
            np.cumsum(ys[:, ::-1], axis=1, out=sfx[:, self.m - 1::-1])
            gv = sfx[:, self.qv]      # per lo value: sum of y E over hi partners
            chp *= sn[:, None]
            gv *= sn[:, None]
            hi = np.einsum("ki,ki->i", e, np.repeat(chp, self.counts, axis=1))
            lo = np.einsum("ki,ki->i", e, np.repeat(gv, self.counts, axis=1))
            hi *= y
            lo -= hi
            lo *= _QUAD_H
            self.gacc[wid] += lo

    def finish(self):
        loss, npairs, gsum = self.res
        if self.need_loss:
            loss[self.s] = float(self.lacc.sum())
        if self.need_grad:
            gsum[self.o + self.order] = self.gacc.sum(axis=0)


def _log_prod_sum(t):
    """sum(log(t)) for a 2-D block with entries in [1, 2**23]: products of
    up to _PROD_GROUP rows first, so only one log per group of entries."""
    nr = t.shape[0]
    full = nr - nr % _PROD_GROUP
    total = 0.0
    if full:
        p = np.multiply.reduce(
            t[:full].reshape(full // _PROD_GROUP, _PROD_GROUP, t.shape[1]),
            axis=1)
        total += float(np.log(p).sum())
    if full < nr:
        total += float(np.log(np.multiply.reduce(t[full:], axis=0)).sum())
    return total


# --------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------

def _normalize(x, label, lengths):
    x32 = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    lab = np.ascontiguousarray(label, dtype=np.float32).reshape(-1)
    n = x32.shape[0]
    if lab.shape[0] != n:
        raise ValueError("label has %d items, X has %d" % (lab.shape[0], n))
    if lengths is None:
        lens = np.array([n], dtype=np.int64)
    else:
        lens = np.asarray(lengths).astype(np.int64, copy=False).reshape(-1)
        if lens.size and int(lens.min()) < 0:
            raise ValueError("negative session length")
        if int(lens.sum()) != n:
            raise ValueError("lengths sum to %d, X has %d items"
                             % (int(lens.sum()), n))
    offs = np.zeros(lens.shape[0] + 1, dtype=np.int64)
    np.cumsum(lens, out=offs[1:])
    return x32, lab, lens, offs


def _evaluate(x32, lab, lens, offs, need_loss, need_grad):
    """Returns (loss sums (S,), pair counts (S,), item gradient sums (N,)),
    float64 / int64 / float64; gradient sums are sum(sigmoid) as lo minus
    sum(sigmoid) as hi, not yet scaled by dY / numPairs."""
    n = x32.shape[0]
    nsess = lens.shape[0]
    loss = np.zeros(nsess)
    npairs = np.zeros(nsess, dtype=np.int64)
    gsum = np.zeros(n) if need_grad else None
    res = (loss, npairs, gsum)
    if n < 2:
        return res
    ne = np.flatnonzero(lens > 0)
    starts = offs[ne]
    finite = np.isfinite(x32) & np.isfinite(lab)
    allfin = bool(finite.all())
    xmax = np.full(nsess, -np.inf)
    xmin = np.full(nsess, np.inf)
    xmax[ne] = np.maximum.reduceat(x32, starts)
    xmin[ne] = np.minimum.reduceat(x32, starts)
    if allfin:
        bad = np.zeros(nsess, dtype=bool)
    else:
        bad = np.zeros(nsess, dtype=bool)
        bad[ne] = np.add.reduceat(~finite, starts) > 0
    spread = xmax.astype(np.float64) - xmin.astype(np.float64)

    if n <= TINY_MAX and allfin and \
            float(x32.max()) - float(x32.min()) <= _NARROW:
        _tiny(x32, lab, offs, res, need_loss, need_grad)
        return res

    x64 = None
    if not allfin:
        sid = np.repeat(np.arange(nsess), lens)
        x64 = x32.astype(np.float64)
        for s in np.flatnonzero(bad):
            _literal_session(x64, lab, sid, int(offs[s]), int(lens[s]), res,
                             need_loss, need_grad)

    ok = (~bad) & (lens >= 2)
    small = np.flatnonzero(ok & (lens <= SMALL_MAX))
    large = np.flatnonzero(ok & (lens > SMALL_MAX))
    tasks = []
    work = 0
    nthreads = _n_threads()
    if small.shape[0]:
        batch = _Batch(x32, lab, offs, lens, res, need_loss, need_grad)
        batch.center = 0.5 * (xmax.astype(np.float64)
                              + xmin.astype(np.float64))
        work += _plan_small(batch, small, lens, spread, nthreads, tasks)
    larges = []
    for k, s in enumerate(large):
        if lens[s] > _FAST_MIN and spread[s] <= _FAST_SPREAD:
            lg = _Fast(x32, lab, int(offs[s]), int(lens[s]), int(s), res,
                       need_loss, need_grad, nthreads)
        else:
            lg = _Large(x32, lab, int(offs[s]), int(lens[s]), int(s), res,
                        need_loss, need_grad, k, nthreads)
        larges.append(lg)
        work += lg.plan(tasks)
    if work < _PAR_MIN_WORK:
        nthreads = 1
    _run_tasks(tasks, nthreads)
    for lg in larges:
        lg.finish()
    return res


# --------------------------------------------------------------------------
# forward -> gradient sharing
# --------------------------------------------------------------------------

_cache_lock = threading.Lock()
_cache = None        # (x copy, label copy, lengths copy, npairs, gsum)
_CACHE_MAX_ITEMS = 1 << 23


def _cache_put(x32, lab, lens, npairs, gsum):
    global _cache
    entry = (x32.copy(), lab.copy(), lens.copy(), npairs, gsum)
    with _cache_lock:
        _cache = entry


def _cache_get(x32, lab, lens):
    with _cache_lock:
        entry = _cache
    if entry is None:
        return None
    cx, cl, cn, npairs, gsum = entry
    if (cn.shape == lens.shape and np.array_equal(cn, lens)
            and cx.shape == x32.shape
            and np.array_equal(cx.view(np.uint32), x32.view(np.uint32))
            and np.array_equal(cl.view(np.uint32), lab.view(np.uint32))):
        return npairs, gsum
    return None


def clear_cache():
    """Forget the gradient sums kept by the last forward call."""
    global _cache
    with _cache_lock:
        _cache = None


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------

def pairwise_loss_forward(x, label, lengths=None):
    """PairWiseLoss.  x, label: float32 (N,); lengths: int (S,) summing to
    N, or None for one session.  Returns float32 (S,)."""
    x32, lab, lens, offs = _normalize(x, label, lengths)
    keep = share_work and 0 < x32.shape[0] <= _CACHE_MAX_ITEMS
    loss, npairs, gsum = _evaluate(x32, lab, lens, offs, True, keep)
    if keep:
        _cache_put(x32, lab, lens, npairs, gsum)
    out = np.zeros(lens.shape[0], dtype=np.float32)
    has = npairs > 0
    out[has] = loss[has] / npairs[has]
    return out


def pairwise_loss_gradient(x, label, dY, lengths=None):
    """PairWiseLossGradient.  dY: float32 (S,).  Returns float32 (N,)."""
    x32, lab, lens, offs = _normalize(x, label, lengths)
    dy = np.asarray(dY, dtype=np.float32).reshape(-1)
    if dy.shape[0] != lens.shape[0]:
        raise ValueError("dY has %d entries, expected %d"
                         % (dy.shape[0], lens.shape[0]))
    n = x32.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    hit = _cache_get(x32, lab, lens) if share_work else None
    if hit is not None:
        npairs, gsum = hit
    else:
        _, npairs, gsum = _evaluate(x32, lab, lens, offs, False, True)
    scale = np.zeros(lens.shape[0])
    has = npairs > 0
    scale[has] = dy[has].astype(np.float64) / npairs[has]
    out = gsum * np.repeat(scale, lens)
    return out.astype(np.float32)
