"""Write tests/fixtures/crossed_gauss_s3e3.csv: a small crossed gaussian case.

Same observation pattern as Ghosh, Hastie & Owen (2022, Sec. 5) at S = 3000
(rho = kappa = 0.56, Upsilon = 1.2716); y = 1 + 0.5 x1 - 0.3 x2 + a_row + b_col + e
with sd(a) = 0.7, sd(b) = 0.4, sd(e) = 1.  Run from the repository root:
    python tests/golden/make_gaussian_case.py && Rscript tests/golden/refit.R
"""

import json

import numpy as np
import pandas as pd

rng = np.random.default_rng(20261124)
S, R_, C_ = 3000, int(np.ceil(3000**0.56)), int(np.ceil(3000**0.56))
hit = rng.random((R_, C_)) < rng.uniform(1, 1.2716, (R_, C_)) * S / (R_ * C_)
row, col = np.nonzero(hit)
n = row.size
x1, x2 = rng.standard_normal(n), rng.standard_normal(n)
a, b = rng.normal(0, 0.7, R_), rng.normal(0, 0.4, C_)
y = 1 + 0.5 * x1 - 0.3 * x2 + a[row] + b[col] + rng.standard_normal(n)
pd.DataFrame({"row": row, "col": col, "y": y.round(6), "x1": x1.round(6), "x2": x2.round(6)}).to_csv(
    "tests/fixtures/crossed_gauss_s3e3.csv", index=False)
with open("tests/fixtures/crossed_gauss_s3e3.truth.json", "w") as fh:
    json.dump({"beta": [1.0, 0.5, -0.3], "sigma_row": 0.7, "sigma_col": 0.4, "sigma": 1.0,
               "N": int(n), "R": R_, "C": C_}, fh)
