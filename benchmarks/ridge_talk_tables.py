"""Reproduce the two simulation tables of Amestoy, van de Wiel & van Wieringen (2021)
with :func:`pyglmm.ridge_lmm`, printed next to the talk's numbers.

Table 1 (RE shrinkage and the number of repeats): 40 individuals with 2, 3, 5 or 8
repeats at visit times t = 1..r, ``y ~ x1 + x2 + (1 + t + t2 + t3 | ind)`` (no fixed t
terms: zero in the simulation), beta ~ N(0, I_2) on x1, x2 ~ N(0, 1), Sigma ~ IW(nu = 10,
Phi = 5 I_4) (so E Sigma = I_4), residual sd 1.  Per replicate: the regularised fit
(lambda and b by empirical Bayes, target A = the simulation's IW mode I_4/3) and the
unregularised ML fit (b = 0, nothing penalised; lme4's ``lmer(REML = FALSE)``); medians of
RMSE(beta)_ML / RMSE(beta)_reg over (x1, x2), KL(Sigma || Sigma_ML) / KL(Sigma ||
Sigma_reg) with KL(S || S_hat) = KL(N(0, S) || N(0, S_hat)), the chosen b, and the share of
replicates whose ML fit is singular (lme4's rule).  Ratios above 1 favour the regularised fit.

Table 2 (fixed effects in high dimension): 40 individuals x 7 repeats (N = 280) at t =
1..7, p = 2 or 500 fixed effects beta ~ N(0, I_p), X ~ N(0, 1), ``(1 + t | ind)`` with
Sigma ~ IW(nu = 6, Phi = 3 I_2) (E Sigma = I_2; target A = its mode 0.33 I_2); medians
of the chosen b and lambda (true lambda = sigma^2 / var(beta) = 1), both by empirical
Bayes, and of b by 5-fold grouped cross-validation (``b="cv"``, default grid, lambda by
empirical Bayes inside each training fit).

The talk does not state nu, the design of t, the target A, the KL's direction or how the
ratios are oriented; the choices above are pyglmm's.  nu is chosen so that the true b is
near the talk's.  The visit times t = 1..r (the usual schedule) were chosen over t on
[0, 1] (where t, t2 and t3 are the same column at 2 repeats and the ML fit is singular in
most replicates at 5 and 8), t on [-1, 1] (b = 0.99 at 2 repeats, where t2 equals the
intercept) and t ~ N(0, 1) per row (ML singular in every replicate at 2 repeats); t = 1..r
gives b = 0.37 and 0.30 at 2 and 8 repeats in a 6-replicate trial (talk: 0.38 and 0.29).
KL(Sigma || Sigma_ML) is unbounded when the ML fit is (nearly) singular, which cubic random
slopes make frequent on any of these designs, so the KL ratio's median can be huge: the
table also prints the medians of the two KLs and the share of singular ML fits.
Default: 3 replicates per setting (a few minutes); ``--full`` runs the talk's 30 and 10.

    python benchmarks/ridge_talk_tables.py [--full] [--seed 1]
"""

import argparse
import time
import warnings

import numpy as np
import pandas as pd
from scipy.stats import invwishart

import pyglmm

TALK_1 = {2: (0.97, 2.26, 0.38), 3: (1.07, 1.49, 0.34), 5: (1.02, 1.20, 0.29), 8: (1.01, 1.05, 0.29)}
TALK_2 = {2: (0.17, 0.09), 500: (0.13, 1.57)}


def iw_mode(q, nu):
    """The mode Phi / (nu + q + 1) of the simulation's IW(nu, Phi = (nu - q - 1) I): the target A."""
    return (nu - q - 1) / (nu + q + 1) * np.eye(q)


def true_b(m, q, nu):
    """The talk's b = (nu + q + 1) / (m + nu + q + 1) of the simulation's prior."""
    return (nu + q + 1) / (m + nu + q + 1)


def simulate(rng, m, r, p, q, nu):
    t = np.tile(np.arange(1.0, r + 1), m)  # visits at t = 1..r (see the module docstring)
    ind = np.repeat(np.arange(m), r)
    Sigma = invwishart(df=nu, scale=(nu - q - 1) * np.eye(q)).rvs(random_state=rng).reshape(q, q)
    gamma = rng.multivariate_normal(np.zeros(q), Sigma, size=m)
    Z = np.column_stack([t ** j for j in range(q)])
    X = rng.normal(size=(m * r, p))
    beta = rng.normal(size=p)
    y = X @ beta + np.einsum("nq,nq->n", Z, gamma[ind]) + rng.normal(size=m * r)
    df = pd.DataFrame({"y": y, "ind": ind, **{f"t{j}" if j > 1 else "t": t ** j for j in range(1, q)},
                       **{f"x{j + 1}": X[:, j] for j in range(p)}})
    return df, beta, Sigma


def kl(S, S_hat):
    """KL(N(0, S) || N(0, S_hat)); infinite when S_hat is singular."""
    q = len(S)
    sign, logdet = np.linalg.slogdet(S_hat)
    if sign <= 0:
        return np.inf
    return 0.5 * (np.trace(np.linalg.solve(S_hat, S)) - q + logdet - np.linalg.slogdet(S)[1])


def table1(reps, rng):
    rows = []
    for r in (2, 3, 5, 8):
        res = []
        for _ in range(reps):
            df, beta, Sigma = simulate(rng, 40, r, 2, 4, 10)
            formula = "y ~ x1 + x2 + (1 + t + t2 + t3 | ind)"  # t, t2, t3 are aliased at 2 repeats
            reg = pyglmm.ridge_lmm(formula, df, A=iw_mode(4, 10))
            ml = pyglmm.ridge_lmm(formula, df, b=0.0, unpenalized=["x1", "x2"])
            err = lambda f: np.sqrt(np.mean((f.params[["x1", "x2"]].to_numpy() - beta) ** 2))  # noqa: E731
            kl_ml, kl_reg = kl(Sigma, ml.re_cov["ind"].to_numpy()), kl(Sigma, reg.re_cov["ind"].to_numpy())
            res.append((err(ml) / err(reg), kl_ml / kl_reg, reg.b_weight, kl_ml, kl_reg, bool(ml.singular)))
        med = np.median(np.array(res, dtype=float), axis=0)
        rows.append([r, *med[:5], np.mean([x[-1] for x in res]), true_b(40, 4, 10), *TALK_1[r]])
    return pd.DataFrame(rows, columns=["repeats", "RMSE ratio", "KL ratio", "b", "KL ML", "KL reg",
                                       "ML singular", "true b", "talk RMSE ratio", "talk KL ratio", "talk b"])


def table2(reps, rng):
    rows = []
    for p in (2, 500):
        res, secs = [], []
        for _ in range(reps):
            df, beta, Sigma = simulate(rng, 40, 7, p, 2, 6)
            formula = "y ~ " + " + ".join(f"x{j + 1}" for j in range(p)) + " + t + (1 + t | ind)"
            t0 = time.perf_counter()
            reg = pyglmm.ridge_lmm(formula, df, A=iw_mode(2, 6))
            secs.append(time.perf_counter() - t0)
            cv = pyglmm.ridge_lmm(formula, df, A=iw_mode(2, 6), b="cv")
            res.append((reg.b_weight, reg.lam, cv.b_weight))
        rows.append([p, *np.median(res, axis=0), true_b(40, 2, 6), 1.0, *TALK_2[p], np.median(secs)])
    return pd.DataFrame(rows, columns=["p (talk's q)", "b", "lambda", "b by CV", "true b", "true lambda", "talk b",
                                       "talk lambda", "seconds per fit (EB)"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="the talk's replicate counts (30 and 10)")
    ap.add_argument("--reps", type=int, help="replicates per setting (default 3, or the talk's with --full)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    reps1, reps2 = (30, 10) if args.full else (args.reps or 3,) * 2
    warnings.simplefilter("ignore")  # singular ML fits at 2 repeats are expected
    pd.set_option("display.width", 120)
    t0 = time.perf_counter()
    print(f"Table 1: median over {reps1} replicates (ratios: ML / regularised)")
    print(table1(reps1, rng).to_string(index=False, float_format="%.3g"))
    print(f"\nTable 2: median over {reps2} replicates")
    print(table2(reps2, rng).to_string(index=False, float_format="%.3g"))
    print(f"\n{time.perf_counter() - t0:.0f} s, backend {pyglmm.backend()}")


if __name__ == "__main__":
    main()
