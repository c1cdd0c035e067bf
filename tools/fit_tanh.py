"""Fit the float32 tanh of ``nbce._cpu`` (the softcap): tanh(u) ~ u P(u^2) / Q(u^2).

Minimises the largest relative error on [0, 9.1] (beyond, tanh rounds to 1 in
float32) by differential correction (Cheney and Loeb): each step solves a
linear programme for P and Q given the previous Q, until the error stops
falling. Prints the coefficients of ``_TANH_P`` and ``_TANH_Q``, lowest
degree first, and the error measured on a fine grid.

    python tools/fit_tanh.py [degree of P] [degree of Q]     # default: 5 3
"""

import sys

import numpy as np
from scipy.optimize import linprog

U_MAX = 9.1


def fit(deg_p, deg_q, n_points=3000, steps=40):
    k = np.arange(n_points)
    u = U_MAX * (1 - np.cos(np.pi * (k + 0.5) / n_points)) / 2  # Chebyshev points: dense at the ends
    s = u * u
    f = np.tanh(u) / u  # tanh(u) / u = P(s) / Q(s), a function of s = u^2
    powers_p = s[:, None] ** np.arange(deg_p + 1)
    powers_q = s[:, None] ** np.arange(deg_q + 1)
    scale_p, scale_q = 1 / np.abs(powers_p).max(axis=0), 1 / np.abs(powers_q).max(axis=0)  # conditioning
    powers_p, powers_q = powers_p * scale_p, powers_q * scale_q
    n_p, n_q = deg_p + 1, deg_q + 1
    # start from the best polynomial (Q = 1)
    p, *_ = np.linalg.lstsq(powers_p / f[:, None], np.ones_like(f), rcond=None)
    q_prev = np.ones_like(f)
    delta = np.abs(powers_p @ p / f - 1).max()
    best = None
    for _ in range(steps):
        # minimise z subject to |Q - P / f| - delta Q <= z Q_prev at every point, |q_j| <= 1
        error_rows = np.hstack([-powers_p / f[:, None], powers_q, np.zeros((n_points, 1))])
        q_rows = np.hstack([np.zeros_like(powers_p), powers_q, np.zeros((n_points, 1))])
        z_rows = np.zeros_like(error_rows)
        z_rows[:, -1] = q_prev
        a_ub = np.vstack([error_rows - delta * q_rows - z_rows, -error_rows - delta * q_rows - z_rows])
        cost = np.zeros(n_p + n_q + 1)
        cost[-1] = 1
        bounds = [(None, None)] * n_p + [(-1, 1)] * n_q + [(None, None)]
        tolerances = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}
        res = linprog(cost, A_ub=a_ub, b_ub=np.zeros(2 * n_points), bounds=bounds, method="highs", options=tolerances)
        p, q = res.x[:n_p], res.x[n_p:-1]
        error = np.abs(powers_p @ p / (powers_q @ q) / f - 1).max()
        if error >= delta:
            break
        delta, q_prev, best = error, powers_q @ q, (p * scale_p, q * scale_q)
    p, q = best
    return p / q[0], q / q[0]


def main():
    deg_p, deg_q = (int(a) for a in sys.argv[1:3]) if len(sys.argv) > 2 else (5, 3)
    p, q = fit(deg_p, deg_q)
    u = np.linspace(0, U_MAX, 400_001)[1:]
    approx = u * np.polynomial.polynomial.polyval(u * u, p) / np.polynomial.polynomial.polyval(u * u, q)
    print("_TANH_P =", tuple(float(c) for c in p))
    print("_TANH_Q =", tuple(float(c) for c in q))
    print(f"max relative error on (0, {U_MAX}]: {np.abs(approx / np.tanh(u) - 1).max():.2e} (exact arithmetic)")


if __name__ == "__main__":
    main()
