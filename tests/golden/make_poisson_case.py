"""Write crossed_poisson_s1e4.csv and .truth.json: a crossed Poisson case with offset and weights.

Same observation pattern as Ghosh, Hastie & Owen (2022, Sec. 5) at S = 1e4
(rho = kappa = 0.56, Upsilon = 1.2716; 174 x 174 levels, about 11k rows), as in
make_gaussian_case.py.  Covariates x1, x2 ~ N(0, 1); exposure ~ U(0.5, 3) entering
as the offset logexp = log(exposure); integer prior weights w uniform on {1, 2, 3}
(drawn independently of y: they only reweight the likelihood);
    log mu = logexp + 0.5 + 0.4 x1 - 0.3 x2 + a_row + b_col,  sd(a) = 0.6, sd(b) = 0.3,
    y ~ Poisson(mu).
Covariates and exposure are rounded before y is drawn, so the CSV holds exactly the
values the response was simulated from (logexp is log of the rounded exposure).
Usage (writes into OUTDIR, default the current directory):
    python make_poisson_case.py [OUTDIR] && Rscript refit_poisson.R [OUTDIR]
"""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

CASE = "crossed_poisson_s1e4"
out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
out.mkdir(parents=True, exist_ok=True)

rng = np.random.default_rng(20261130)
S = 10_000
R_ = C_ = int(np.ceil(S**0.56))
hit = rng.random((R_, C_)) < rng.uniform(1, 1.2716, (R_, C_)) * S / (R_ * C_)
row, col = np.nonzero(hit)
n = row.size
x1 = rng.standard_normal(n).round(6)
x2 = rng.standard_normal(n).round(6)
exposure = rng.uniform(0.5, 3.0, n).round(4)
logexp = np.log(exposure).round(8)
w = rng.integers(1, 4, n)
beta = [0.5, 0.4, -0.3]
sigma_row, sigma_col = 0.6, 0.3
a, b = rng.normal(0, sigma_row, R_), rng.normal(0, sigma_col, C_)
eta = logexp + beta[0] + beta[1] * x1 + beta[2] * x2 + a[row] + b[col]
y = rng.poisson(np.exp(eta))

pd.DataFrame({"y": y, "x1": x1, "x2": x2, "exposure": exposure, "logexp": logexp,
              "w": w, "row": row, "col": col}).to_csv(out / f"{CASE}.csv", index=False)
with open(out / f"{CASE}.truth.json", "w") as fh:
    json.dump({"beta": beta, "sigma_row": sigma_row, "sigma_col": sigma_col,
               "offset": "logexp", "weights": "w", "N": int(n), "R": R_, "C": C_}, fh)
print(f"wrote {out / CASE}.csv: N = {n}, R = C = {R_}, "
      f"{np.unique(row).size} rows and {np.unique(col).size} cols used, "
      f"mean y = {y.mean():.3f}, zeros = {np.mean(y == 0):.3f}, max y = {y.max()}")
