# ruff: noqa: F821
"""The model-independent half of the compiled engine's source: a Rosenbrock method (RODAS5P or RODAS4, whose
tableau the generated header holds) and the steady-state search for ``W``
patients side by side, each with its own step and its own iteration.

This file is not imported: :mod:`mscsim.solvers.compiled` appends its text to the code it generates from one
compiled model (``rhs_w``, ``jac_w``, ``factor_w``, ``solve_w`` and the constants ``N``, ``M``, ``NNZ``,
``NSLOTS``, ``W``, ``JROW``, ``JCOL``, ``OPTS`` and the method's tableau ``S``, ``EXPLICIT``, ``A``, ``C``, ``HD``,
``ND``, ``HJ``, ``GAMMA``, ``ORDER_EMBEDDED``: see :mod:`mscsim.solvers._rosenbrock`), and Numba
compiles the whole module to machine code (cached on disk beside it). One source of truth for the model: the
generated functions come from the mechanism files through :func:`mscsim.model.compile.compile_model`.

Why by hand: no maintained library integrates a batch of stiff systems with per-system error control in
compiled code callable from Python without a system compiler (SUNDIALS/CVODE needs one per model; diffrax runs
one system per solve under ``vmap``, see ``solvers/jax_solver.py``).

Every lane (patient) does its own arithmetic: element by element over the lanes, no reduction across them, no
fast-math, so a patient's numbers do not depend on which lane, slice, chunk or thread runs it. A lane whose
patient has finished its segment takes the next patient of its slice, so lanes do not idle while a slow
patient finishes. Slices run on Python threads (:func:`mscsim.solvers.compiled._in_slices`; every function here
releases the GIL), not in a Numba ``prange``: its parallel compilation took about 16 of the 48 s that compiling
the knee-OA kernels cost on the first call.
"""

import math
from collections import namedtuple

import numpy as np
from numba import njit

# the per-lane working arrays of a step (one set per slice of patients)
Work = namedtuple("Work", ["K", "yi", "r", "ci", "dsh", "hinv", "jv", "lu", "cm", "ok", "wd", "piv", "save", "dg",
                           "chk", "res", "mag"])


@njit(**OPTS)
def _work():
    return Work(np.zeros((S + 1, N, W)), np.zeros((N, W)), np.zeros((N, W)), np.zeros((N, W)), np.zeros((N, W)),
                np.ones(W), np.zeros((max(NNZ, 1), W)), np.zeros((NSLOTS, W)), np.zeros((NSLOTS, W)),
                np.ones(W, dtype=np.bool_), np.zeros((W, N, N)), np.zeros((W, N), dtype=np.int64), np.zeros((N, W)),
                np.zeros((N, W)), np.zeros(W, dtype=np.bool_), np.zeros(N), np.zeros(N))

SAFETY, FAC_MIN, FAC_MAX = 0.9, 0.2, 6.0
H_MARGIN = 1e-12
ORDER_EXP = 1.0 / (ORDER_EMBEDDED + 1)

# status codes of a patient's solve (shared with mscsim.solvers.compiled.STATUS)
OK, MAX_STEPS, STEP_UNDERFLOW = 0, 1, 2
# status codes of the steady-state search
SS_STABLE, SS_NO_CONVERGENCE, SS_CHECK_EIGENVALUES, SS_NOT_FINITE = 0, 1, 2, 3
# a steady state's residual |f_i| / (|x_i| + atol_i), per hour: with the slowest mode at ~1e-4 per hour (fibrosis,
# ~300 d), 1e-14 puts the state within ~1e-10 of the fixed point
RESIDUAL_TOL = 1e-14
# the largest componentwise backward error (Oettli-Prager) accepted from the unpivoted sparse LU of a W not proven
# to be an H-matrix: a few units of N * eps, as backward stable as a pivoted LU is guaranteed to be (Higham 2002,
# Accuracy and Stability of Numerical Algorithms, 2nd ed., SIAM, Thm 9.3 and 7.3); a larger one falls back to it
OMEGA_MAX = 8.0 * N * 2.220446049250313e-16


@njit(**OPTS)
def _f(x, p, u, hold, f):
    """f = rhs(x) + u, with the rows of held states set to zero."""
    rhs_w(x, p, f)
    for i in range(N):
        if hold[i]:
            for l in range(W):
                f[i, l] = 0.0
        else:
            for l in range(W):
                f[i, l] += u[i, l]


@njit(**OPTS)
def _jac(x, p, hold, jv):
    jac_w(x, p, jv)
    for k in range(NNZ):
        if hold[JROW[k]]:
            for l in range(W):
                jv[k, l] = 0.0


@njit(**OPTS)
def _dense_factor(jv, dsh, l, wd, piv):
    """Pivoted LU of lane ``l``'s W = diag(dsh) - J into ``wd`` (N, N) and ``piv`` (the fallback for a lane whose
    unpivoted sparse solve was not backward stable; partial pivoting, row by row)."""
    for i in range(N):
        for j in range(N):
            wd[i, j] = 0.0
        wd[i, i] = dsh[i, l]
    for k in range(NNZ):
        wd[JROW[k], JCOL[k]] -= jv[k, l]
    for k in range(N):
        best, arg = abs(wd[k, k]), k
        for i in range(k + 1, N):
            if abs(wd[i, k]) > best:
                best, arg = abs(wd[i, k]), i
        piv[k] = arg
        if arg != k:
            for j in range(N):
                tmp = wd[k, j]
                wd[k, j] = wd[arg, j]
                wd[arg, j] = tmp
        if wd[k, k] != 0.0:
            for i in range(k + 1, N):
                wd[i, k] /= wd[k, k]
                for j in range(k + 1, N):
                    wd[i, j] -= wd[i, k] * wd[k, j]


@njit(**OPTS)
def _dense_solve(wd, piv, b, l):
    """Solve with lane ``l``'s pivoted LU, in place on column ``l`` of ``b``."""
    for k in range(N):
        a = piv[k]
        if a != k:
            tmp = b[k, l]
            b[k, l] = b[a, l]
            b[a, l] = tmp
    for i in range(N):
        s = b[i, l]
        for j in range(i):
            s -= wd[i, j] * b[j, l]
        b[i, l] = s
    for i in range(N - 1, -1, -1):
        s = b[i, l]
        for j in range(i + 1, N):
            s -= wd[i, j] * b[j, l]
        b[i, l] = s / wd[i, i]


@njit(**OPTS)
def _backward_error(ws, b, x, l):
    """The componentwise backward error max_i |b - W x|_i / (|W| |x| + |b|)_i of lane ``l``'s solution ``x`` of
    W x = b, W = diag(dsh) - J (Oettli & Prager 1964): how far W and b would have to move for x to be exact."""
    jv, dsh, res, mag = ws.jv, ws.dsh, ws.res, ws.mag
    for i in range(N):
        d = dsh[i, l] * x[i, l]
        res[i] = b[i, l] - d
        mag[i] = abs(b[i, l]) + abs(d)
    for k in range(NNZ):
        v = jv[k, l] * x[JCOL[k], l]
        res[JROW[k]] += v
        mag[JROW[k]] += abs(v)
    omega = 0.0
    for i in range(N):
        e = abs(res[i])
        if e > 0.0:
            if not (mag[i] > 0.0 and math.isfinite(e)):
                return math.inf
            if e / mag[i] > omega:
                omega = e / mag[i]
    return omega


@njit(**OPTS)
def _factor(x, p, hold, dsh, ws):
    """Factor W = diag(dsh) - J for every lane without pivoting on the sparsity pattern. Where W is proven an
    H-matrix (``ok``: its comparison matrix factored, every pivot positive) that LU is stable; on the other lanes
    (``chk``) each solve's backward error is checked, and a lane whose solve is not backward stable is factored
    again with pivoting (dense) for the rest of the step (see ``_solve``). Proving or checking costs a few sparse
    passes where a dense LU of every unproven lane cost O(N^3). (A cheaper proof, scaled diagonal dominance with
    the scaling d from the lane's last full test, was dropped: on the knee-OA model it failed on ~90 % of steps,
    W's comparison matrix being close to singular, and cost more than it saved.) Each lane's verdict is its own."""
    jv, lu, cm, ok, dg, chk = ws.jv, ws.lu, ws.cm, ws.ok, ws.dg, ws.chk
    _jac(x, p, hold, jv)
    fill_w(jv, dsh, lu)
    comparison_w(lu, cm, dg)
    plan_w(cm)
    pivots_positive_w(cm, dg, ok)
    plan_w(lu)
    for l in range(W):
        chk[l] = not ok[l]


@njit(**OPTS)
def _solve(ws, b):
    """W^-1 b for every lane, in place: the sparse LU's solution, checked on the lanes whose W is not proven an
    H-matrix; a lane whose check fails is factored with pivoting (once per step) and solved with that."""
    lu, ok, chk, wd, piv, save = ws.lu, ws.ok, ws.chk, ws.wd, ws.piv, ws.save
    all_ok = True
    for l in range(W):
        if not ok[l]:
            all_ok = False
    if all_ok:
        solve_w(lu, b)
        return
    for i in range(N):
        for l in range(W):
            save[i, l] = b[i, l]
    solve_w(lu, b)
    for l in range(W):
        if ok[l]:
            continue
        if chk[l]:
            if _backward_error(ws, save, b, l) <= OMEGA_MAX:
                continue
            chk[l] = False
            _dense_factor(ws.jv, ws.dsh, l, wd[l], piv[l])
        for i in range(N):
            b[i, l] = save[i, l]
        _dense_solve(wd[l], piv[l], b, l)


@njit(**OPTS)
def _stage_input(y, hinv, K, s, yi, ci):
    """Stage s's state and its C-term: yi = y + sum_j A[s, j] K_j for the explicit stages (s <= EXPLICIT), else
    yi (the previous stage's state) + K_{s-1}; ci = sum_j C[s, j] K_j / h. Summed in the order of
    ``_rosenbrock.stages``."""
    explicit = s <= EXPLICIT
    K1 = K[1]
    for i in range(N):
        for l in range(W):
            ci[i, l] = C[s, 1] * K1[i, l]
            if explicit:
                yi[i, l] = A[s, 1] * K1[i, l]
    for j in range(2, s):
        Kj = K[j]
        a = A[s, j]
        c = C[s, j]
        for i in range(N):
            for l in range(W):
                ci[i, l] += c * Kj[i, l]
                if explicit:
                    yi[i, l] += a * Kj[i, l]
    Kp = K[s - 1]
    for i in range(N):
        for l in range(W):
            ci[i, l] *= hinv[l]
            if explicit:
                yi[i, l] += y[i, l]
            else:
                yi[i, l] += Kp[i, l]


@njit(**OPTS)
def _rosenbrock(y, p, u, hold, h, ws):
    """One Rosenbrock step (the tableau's S stages) of every lane with its own step h[l]: stages into
    ws.K[1..S], the new state into ws.yi; the error estimate is K[S]. The stage sums are accumulated in the
    order of ``_rosenbrock.stages``."""
    K, yi, r, ci, dsh, hinv = ws.K, ws.yi, ws.r, ws.ci, ws.dsh, ws.hinv
    for l in range(W):
        inv = 1.0 / (h[l] * GAMMA)
        hinv[l] = 1.0 / h[l]
        for i in range(N):
            dsh[i, l] = inv
    _factor(y, p, hold, dsh, ws)
    _f(y, p, u, hold, K[1])
    _solve(ws, K[1])
    for s in range(2, S + 1):
        _stage_input(y, hinv, K, s, yi, ci)
        _f(yi, p, u, hold, r)
        Ks = K[s]
        for i in range(N):
            for l in range(W):
                Ks[i, l] = r[i, l] + ci[i, l]
        _solve(ws, Ks)
    KS = K[S]
    for i in range(N):
        for l in range(W):
            yi[i, l] += KS[i, l]


@njit(**OPTS)
def _to_lane(dst, src, b, l):
    """Row ``b`` of a patients-by-values array into lane ``l`` (a column) of a values-by-lanes array."""
    for i in range(dst.shape[0]):
        dst[i, l] = src[b, i]


@njit(**OPTS)
def _idle_lanes(x, atol, p, X, ATOL, P, lo):
    """Every lane starts on patient ``lo``'s numbers, so lanes left idle compute on finite values (discarded)."""
    for l in range(W):
        _to_lane(x, X, lo, l)
        _to_lane(atol, ATOL, lo, l)
        _to_lane(p, P, lo, l)


@njit(**OPTS)
def _initial_step(y, f, atol, rtol, span, l):
    """Hairer's starting-step heuristic for lane ``l``, capped by the segment's length."""
    d0 = 0.0
    d1 = 0.0
    for i in range(N):
        sc = atol[i, l] + rtol * abs(y[i, l])
        d0 += (y[i, l] / sc) ** 2
        d1 += (f[i, l] / sc) ** 2
    d0 = math.sqrt(d0 / N)
    d1 = math.sqrt(d1 / N)
    h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / max(d1, 1e-300)
    return min(h0, span)


@njit(**OPTS)
def integrate_slice(lo, hi, Y, H, P, U, ATOL, hold, t0, stops, n_stops, scols, out, rtol, max_steps, status, nsteps):
    """Advance patients lo..hi-1 from t0 to the segment's end (stops[n_stops - 1]), W at a time, each with its own
    steps; output times inside a step are read off the method's dense output."""
    t1 = stops[n_stops - 1]
    y = np.zeros((N, W))
    p = np.zeros((M, W))
    u = np.zeros((N, W))
    atol = np.ones((N, W))
    ws = _work()
    K, yi, r = ws.K, ws.yi, ws.r
    dd = np.zeros((ND, N))
    h = np.ones(W)
    h_try = np.ones(W)
    t = np.zeros(W)
    k = np.zeros(W, dtype=np.int64)
    steps = np.zeros(W, dtype=np.int64)
    pid = np.full(W, -1, dtype=np.int64)
    need_h0 = np.zeros(W, dtype=np.bool_)
    _idle_lanes(y, atol, p, Y, ATOL, P, lo)
    nxt = lo
    while True:
        # fill idle lanes with the slice's next patients still running (failed patients are skipped)
        fresh = False
        for l in range(W):
            if pid[l] < 0:
                while nxt < hi and status[nxt] != OK:
                    nxt += 1
                if nxt < hi:
                    b = nxt
                    nxt += 1
                    pid[l] = b
                    _to_lane(y, Y, b, l)
                    _to_lane(u, U, b, l)
                    _to_lane(atol, ATOL, b, l)
                    _to_lane(p, P, b, l)
                    t[l] = t0
                    k[l] = 0
                    steps[l] = 0
                    h[l] = H[b]
                    need_h0[l] = not (H[b] > 0.0)
                    fresh = fresh or need_h0[l]
        running = False
        for l in range(W):
            if pid[l] >= 0:
                running = True
        if not running:
            return
        if fresh:
            _f(y, p, u, hold, r)
            for l in range(W):
                if pid[l] >= 0 and need_h0[l]:
                    h[l] = _initial_step(y, r, atol, rtol, t1 - t0, l)
                    need_h0[l] = False
        for l in range(W):
            h_try[l] = min(h[l], t1 - t[l]) if pid[l] >= 0 else 1.0
        _rosenbrock(y, p, u, hold, h_try, ws)
        for l in range(W):
            if pid[l] < 0:
                continue
            b = pid[l]
            steps[l] += 1
            ss = 0.0
            for i in range(N):
                sc = max(abs(y[i, l]), abs(yi[i, l])) * rtol + atol[i, l]
                e = K[S, i, l] / sc
                ss += e * e
            err = math.sqrt(ss / N)
            if not math.isfinite(err):
                err = math.inf
            accept = err <= 1.0
            fac = min(max(SAFETY * max(err, 1e-10) ** (-ORDER_EXP), FAC_MIN), FAC_MAX)
            if not accept:
                fac = min(fac, 1.0)
            if accept and h_try[l] < h[l]:
                h[l] = max(h[l], h_try[l] * fac)
            else:
                h[l] = h_try[l] * fac
            if not accept:
                if t[l] + h[l] == t[l] or steps[l] >= max_steps:
                    status[b] = STEP_UNDERFLOW if t[l] + h[l] == t[l] else MAX_STEPS
                    nsteps[b] += steps[l]
                    H[b] = h[l]
                    for i in range(N):
                        Y[b, i] = y[i, l]
                    pid[l] = -1
                continue
            landed = h_try[l] >= t1 - t[l]
            t_new = t1 if landed else t[l] + h_try[l]
            if k[l] < n_stops - 1 and stops[k[l]] <= t_new:
                for q in range(ND):  # the dense output's D_q, summed as _rosenbrock.dense_terms
                    for i in range(N):
                        a = HD[q, 1] * K[1, i, l]
                        for j in range(2, HJ + 1):
                            a = a + HD[q, j] * K[j, i, l]
                        dd[q, i] = a
                while k[l] < n_stops - 1 and stops[k[l]] <= t_new:
                    theta = min((stops[k[l]] - t[l]) / h_try[l], 1.0)
                    one = 1.0 - theta
                    for c in range(scols.shape[1]):
                        col = scols[k[l], c]
                        if col < 0:
                            break
                        for i in range(N):  # as _rosenbrock.dense_value
                            acc = dd[ND - 1, i]
                            for q in range(ND - 2, -1, -1):
                                acc = acc * theta + dd[q, i]
                            out[b, col, i] = ((acc * one + yi[i, l]) * theta) + y[i, l] * one
                    k[l] += 1
            t[l] = t_new
            for i in range(N):
                y[i, l] = yi[i, l]
            if landed:
                for c in range(scols.shape[1]):
                    col = scols[n_stops - 1, c]
                    if col < 0:
                        break
                    for i in range(N):
                        out[b, col, i] = y[i, l]
                for i in range(N):
                    Y[b, i] = y[i, l]
                H[b] = h[l]
                nsteps[b] += steps[l]
                pid[l] = -1
            elif steps[l] >= max_steps:
                status[b] = MAX_STEPS
                nsteps[b] += steps[l]
                for i in range(N):
                    Y[b, i] = y[i, l]
                pid[l] = -1


@njit(**OPTS)
def _wnorm(f, x, atol, l):
    m = 0.0
    for i in range(N):
        v = abs(f[i, l]) / (abs(x[i, l]) + atol[i, l])
        if v > m or not math.isfinite(v):
            m = v
    return m


@njit(**OPTS)
def steady_slice(lo, hi, X, P, ATOL, hold, h0, tol, max_iter, status, iters):
    """The steady state of the untreated model for patients lo..hi-1 (rows of X, updated in place), W at a time, by
    pseudo-transient continuation (Kelley & Keyes 1998): x += (I/h - J)^-1 f(x), h growing as the residual falls
    (switched evolution relaxation), which is Newton's method once h is large. Held states stay at their values.
    A lane whose patient has converged (or failed) takes the slice's next patient, so lanes do not idle while a
    slow patient iterates; each patient's arithmetic is its own, so its result does not depend on its lane."""
    x = np.zeros((N, W))
    xn = np.zeros((N, W))
    p = np.zeros((M, W))
    u = np.zeros((N, W))
    atol = np.ones((N, W))
    f = np.zeros((N, W))
    fn = np.zeros((N, W))
    dx = np.zeros((N, W))
    ws = _work()
    dsh = ws.dsh
    h = np.full(W, h0)
    res = np.zeros(W)
    it = np.zeros(W, dtype=np.int64)
    pid = np.full(W, -1, dtype=np.int64)
    _idle_lanes(x, atol, p, X, ATOL, P, lo)
    nxt = lo
    while True:
        fresh = False
        for l in range(W):
            if pid[l] < 0 and nxt < hi:
                b = nxt
                nxt += 1
                pid[l] = b
                _to_lane(x, X, b, l)
                _to_lane(atol, ATOL, b, l)
                _to_lane(p, P, b, l)
                h[l] = h0
                it[l] = 0
                fresh = True
        alive = False
        for l in range(W):
            if pid[l] >= 0:
                alive = True
        if not alive:
            break
        if fresh:
            _f(x, p, u, hold, fn)
            for l in range(W):
                if pid[l] >= 0 and it[l] == 0:
                    for i in range(N):
                        f[i, l] = fn[i, l]
                    res[l] = _wnorm(f, x, atol, l)
        for l in range(W):
            inv = 1.0 / h[l]
            for i in range(N):
                dsh[i, l] = inv
                dx[i, l] = f[i, l]
        _factor(x, p, hold, dsh, ws)
        _solve(ws, dx)
        for i in range(N):
            for l in range(W):
                xn[i, l] = x[i, l] + dx[i, l] if pid[l] >= 0 else x[i, l]
        _f(xn, p, u, hold, fn)
        for l in range(W):
            if pid[l] < 0:
                continue
            b = pid[l]
            it[l] += 1
            finished = False
            bad = False
            step = 0.0
            for i in range(N):
                v = xn[i, l]
                if not math.isfinite(v) or v < -atol[i, l]:
                    bad = True
                s = abs(dx[i, l]) / (abs(v) + atol[i, l])
                if s > step:
                    step = s
            rn = _wnorm(fn, xn, atol, l)
            if bad or not math.isfinite(rn):
                h[l] *= 0.25  # overshoot: a smaller pseudo-time step
                if h[l] < 1e-8 * h0:
                    finished = True
                    status[b] = SS_NO_CONVERGENCE
            else:
                for i in range(N):
                    x[i, l] = xn[i, l]
                    f[i, l] = fn[i, l]
                iters[b] = it[l]
                # converged: in the Newton regime, with a tiny step or a residual at rounding level (the step of an
                # ill-conditioned J stalls above tol while the residual is already ~1e-16 per hour)
                if h[l] >= 1e12 and (step <= tol or rn <= RESIDUAL_TOL):
                    finished = True
                    status[b] = SS_STABLE
                else:
                    growth = res[l] / rn if rn > 0.0 else 1e4
                    h[l] = min(h[l] * min(max(growth, 0.2), 1e4), 1e14)
                    if rn == 0.0:
                        h[l] = 1e14
                    res[l] = rn
            if not finished and it[l] >= max_iter:
                finished = True
                status[b] = SS_NO_CONVERGENCE
            if finished:
                for i in range(N):
                    X[b, i] = x[i, l]
                pid[l] = -1
    # stability: W = -J on the free states (identity rows for held ones) an H-matrix with a positive diagonal is
    # positive stable, so J is stable (Varga); otherwise the caller checks J's eigenvalues. W patients at a time
    # (spare lanes repeat the last one), each lane's verdict from the full test on its own patient alone.
    for l in range(W):
        for i in range(N):
            dsh[i, l] = 1.0 if hold[i] else 0.0
    jv, ok = ws.jv, ws.ok
    for b0 in range(lo, hi, W):
        nb = min(W, hi - b0)
        for l in range(W):
            b = b0 + min(l, nb - 1)
            _to_lane(x, X, b, l)
            _to_lane(p, P, b, l)
        _factor(x, p, hold, dsh, ws)
        for l in range(nb):
            b = b0 + l
            if status[b] != SS_STABLE:
                continue
            positive = ok[l]
            for i in range(N):
                if not hold[i]:
                    wii = 0.0
                    for k in range(NNZ):
                        if JROW[k] == i and JCOL[k] == i:
                            wii = -jv[k, l]
                    if not wii > 0.0:
                        positive = False
            if not positive:
                status[b] = SS_CHECK_EIGENVALUES
