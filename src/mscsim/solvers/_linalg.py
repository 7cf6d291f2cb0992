"""Batched solves with the Rosenbrock matrix W = I/(h*gamma) - J, vectorised over patients.

Why by hand: NumPy's batched ``inv``/``solve`` call LAPACK once per small matrix, which costs more than the
arithmetic for the 10-60-state matrices here, and SciPy's ``lu_factor`` does not batch. For compartmental
models (cells moving between compartments) W is column diagonally dominant, so Gaussian elimination without
pivoting is stable; we factor those patients with a loop over the n pivot columns vectorised over thousands
of patients, and send any patient whose W is not diagonally dominant to LAPACK. Each patient's arithmetic
does not depend on the batch size, so results do not depend on chunking.
"""

from __future__ import annotations

import numpy as np


class BatchedSolver:
    """Factor a (B, n, n) batch once, then solve (B, n) right-hand sides.

    Internally the batch is the last, contiguous axis ((n, n, B)), so every elimination step is a
    vector operation over patients.
    """

    def __init__(self, W: np.ndarray):
        B, n, _ = W.shape
        diag = np.abs(np.diagonal(W, axis1=1, axis2=2))
        off = np.abs(W).sum(axis=1) - diag
        dominant = np.all(diag > off, axis=1)
        self.fast = np.nonzero(dominant)[0]
        self.slow = np.nonzero(~dominant)[0]
        self.all_fast = self.slow.size == 0
        A = W if self.all_fast else W[self.fast]
        LU = np.ascontiguousarray(np.moveaxis(A, 0, -1))  # (n, n, B)
        for k in range(n - 1):
            LU[k + 1:, k] /= LU[k, k]
            LU[k + 1:, k + 1:] -= LU[k + 1:, k, None] * LU[k, None, k + 1:]
        self.LU = LU
        self.inv = np.linalg.inv(W[self.slow]) if self.slow.size else None
        self.n = n

    def solve(self, b: np.ndarray) -> np.ndarray:
        if self.all_fast:
            return self._lu_solve(b)
        x = np.empty_like(b)
        x[self.fast] = self._lu_solve(b[self.fast])
        if self.slow.size:
            x[self.slow] = np.einsum("bij,bj->bi", self.inv, b[self.slow])
        return x

    def _lu_solve(self, b: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(b.T, dtype=float)  # (n, B)
        LU, n = self.LU, self.n
        for k in range(n - 1):
            x[k + 1:] -= LU[k + 1:, k] * x[k]
        for k in range(n - 1, -1, -1):
            x[k] /= LU[k, k]
            if k:
                x[:k] -= LU[:k, k] * x[k]
        return np.ascontiguousarray(x.T)


class SparsePattern:
    """The elimination plan for one sparsity pattern of W = I/(h*gamma) - J (diagonal always present).

    Symbolic LU without pivoting in the natural order: which entries fill in, and the list of vector
    operations (over the patient batch) that factor and solve, on a compact (slots, B) store holding
    only the structural non-zeros. Built once per compiled model.
    """

    def __init__(self, n: int, rows: np.ndarray, cols: np.ndarray):
        nz = {(int(i), int(j)) for i, j in zip(rows, cols)} | {(i, i) for i in range(n)}
        plan = []  # (i, j, k): "div" when j is None (L[i,k] /= U[k,k]), else LU[i,j] -= L[i,k] * U[k,j]
        for k in range(n):
            below = sorted(i for (i, j) in nz if j == k and i > k)
            right = sorted(j for (i, j) in nz if i == k and j > k)
            for i in below:
                plan.append((i, None, k))
                for j in right:
                    nz.add((i, j))  # fill-in
                    plan.append((i, j, k))
        self.n = n
        self.slot = {ij: s for s, ij in enumerate(sorted(nz))}
        sl = self.slot
        self.factor_ops = [(sl[(i, k)], sl[(k, k)], None) if j is None else (sl[(i, j)], sl[(i, k)], sl[(k, j)])
                           for i, j, k in plan]
        lower = sorted(((i, k) for (i, k) in nz if i > k), key=lambda ik: (ik[1], ik[0]))
        self.lower = [(i, k, sl[(i, k)]) for i, k in lower]
        upper = sorted(((i, j) for (i, j) in nz if j > i), key=lambda ij: (-ij[1], ij[0]))
        self.upper = [(i, j, sl[(i, j)]) for i, j in upper]
        self.diag_slots = np.array([sl[(i, i)] for i in range(n)])
        r = np.asarray(rows)
        c = np.asarray(cols)
        self.entry_slots = np.array([sl[(int(i), int(j))] for i, j in zip(r, c)], dtype=np.intp)
        # column membership of the off-diagonal Jacobian entries, for the diagonal-dominance test
        self.col_of_entry = np.zeros((n, len(r)))
        off = r != c
        self.col_of_entry[c[off], np.nonzero(off)[0]] = 1.0
        self.n_slots = len(sl)


class SparseBatchedSolver:
    """Factor W = I/(h*gamma) - J for a batch using the model's sparsity; same interface as BatchedSolver.

    Only the structural non-zeros (with fill-in) are stored and touched, batch-last, so each step costs a
    few dozen vector operations over patients whatever n is. Patients whose W is not column diagonally
    dominant (where elimination without pivoting could be unstable) go to LAPACK.
    """

    def __init__(self, pattern: SparsePattern, jac_vals: np.ndarray, inv_hg: np.ndarray):
        n, B = pattern.n, jac_vals.shape[0]
        W = np.zeros((pattern.n_slots, B))
        W[pattern.entry_slots] = -jac_vals.T
        W[pattern.diag_slots] += inv_hg
        off = np.einsum("bk,jk->bj", np.abs(jac_vals), pattern.col_of_entry)
        diag_j = np.abs(W[pattern.diag_slots]).T
        dominant = np.all(diag_j > off, axis=1)
        self.pattern, self.n = pattern, n
        self.all_fast = bool(dominant.all())
        self.fast = np.nonzero(dominant)[0]
        self.slow = np.nonzero(~dominant)[0]
        if not self.all_fast:
            dense = np.zeros((self.slow.size, n, n))
            rows, cols = zip(*sorted(pattern.slot, key=pattern.slot.get))
            dense[:, np.array(rows), np.array(cols)] = W[:, self.slow].T
            self.inv = np.linalg.inv(dense)
            W = np.ascontiguousarray(W[:, self.fast])
        for a, b, c in pattern.factor_ops:
            if c is None:
                W[a] /= W[b]
            else:
                W[a] -= W[b] * W[c]
        self.LU = W

    def solve(self, b: np.ndarray) -> np.ndarray:
        if self.all_fast:
            return self._lu_solve(b)
        x = np.empty_like(b)
        if self.fast.size:
            x[self.fast] = self._lu_solve(b[self.fast])
        if self.slow.size:
            x[self.slow] = np.einsum("bij,bj->bi", self.inv, b[self.slow])
        return x

    def _lu_solve(self, b: np.ndarray) -> np.ndarray:
        x = np.array(b.T, dtype=float, order="C")
        LU, pat = self.LU, self.pattern
        for i, k, s in pat.lower:
            x[i] -= LU[s] * x[k]
        done = self.n
        ds = pat.diag_slots
        for i, j, s in pat.upper:
            while done > j:  # columns are visited from the right; divide each pivot once, when reached
                done -= 1
                x[done] /= LU[ds[done]]
            x[i] -= LU[s] * x[j]
        while done > 0:
            done -= 1
            x[done] /= LU[ds[done]]
        return np.ascontiguousarray(x.T)
