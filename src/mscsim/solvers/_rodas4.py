"""Coefficients of RODAS4 (Hairer & Wanner 1996, Solving ODEs II, sec. IV.7), in the W-transformed form.

Stages solve (I/(h*gamma) - J) k_i = f(Y_i) + sum_j C_ij k_j / h; the last two stages make the method
stiffly accurate, and k6 is the embedded error estimate (order 4, embedded 3).
"""

GAMMA = 0.25
A = {
    (2, 1): 1.544,
    (3, 1): 0.9466785280815826, (3, 2): 0.2557011698983284,
    (4, 1): 3.314825187068521, (4, 2): 2.896124015972201, (4, 3): 0.9986419139977817,
    (5, 1): 1.221224509226641, (5, 2): 6.019134481288629, (5, 3): 12.53708332932087, (5, 4): -0.6878860361058950,
}
C = {
    (2, 1): -5.6688,
    (3, 1): -2.430093356833875, (3, 2): -0.2063599157091915,
    (4, 1): -0.1073529058151375, (4, 2): -9.594562251023355, (4, 3): -20.47028614809616,
    (5, 1): 7.496443313967647, (5, 2): -10.24680431464352, (5, 3): -33.99990352819905, (5, 4): 11.70890893206160,
    (6, 1): 8.083246795921522, (6, 2): -7.981132988064893, (6, 3): -31.52159432874371, (6, 4): 16.31930543123136,
    (6, 5): -6.058818238834054,
}
ORDER_EMBEDDED = 3

# Dense output (Hairer & Wanner's RODAS code, METH=1; the same values as OrdinaryDiffEq.jl's Rodas4 tableau):
# y(t0 + theta*h) = (1 - theta)*y0 + theta*(y1 + (1 - theta)*(D2 + theta*D3)), D_r = sum_j H[(r, j)] k_j, a
# continuous extension of order 3 that is exact at theta = 0 and 1, so outputs need not shorten the steps.
H = {
    (2, 1): 10.12623508344586, (2, 2): -7.487995877610167, (2, 3): -34.80091861555747,
    (2, 4): -7.992771707568823, (2, 5): 1.025137723295662,
    (3, 1): -0.6762803392801253, (3, 2): 6.087714651680015, (3, 3): 16.43084320892478,
    (3, 4): 24.76722511418386, (3, 5): -6.594389125716872,
}


def dense_terms(k):
    """D2, D3 of the dense output from the stages ``k[1..5]`` (array-library agnostic, fixed summation order)."""
    d2, d3 = H[(2, 1)] * k[1], H[(3, 1)] * k[1]
    for j in range(2, 6):
        d2 = d2 + H[(2, j)] * k[j]
        d3 = d3 + H[(3, j)] * k[j]
    return d2, d3


def rodas4_stages(f, solve, y, h):
    """The six RODAS4 stages for a batch: ``f`` is the right-hand side, ``solve`` applies W^-1, ``h`` is the
    per-patient step (shape (B,)). Array-library agnostic (NumPy or jax.numpy). Returns (y_new, error, k), with
    the stages ``k[1..6]`` for the dense output."""
    hinv = (1.0 / h)[:, None]
    k = [None] * 7
    k[1] = solve(f(y))
    for i in range(2, 6):
        yi = y + sum(A[(i, j)] * k[j] for j in range(1, i))
        k[i] = solve(f(yi) + hinv * sum(C[(i, j)] * k[j] for j in range(1, i)))
    y6 = y + sum(A[(5, j)] * k[j] for j in range(1, 5)) + k[5]
    k[6] = solve(f(y6) + hinv * sum(C[(6, j)] * k[j] for j in range(1, 6)))
    return y6 + k[6], k[6], k
