"""The simulation design of Limpoco, Faes & Hens (2025), as the shared notes give it
(federated.md section 1b): m clusters of n_h rows, x1 ~ N(7.29, 9.34^2) and
x2 ~ Poisson(63.5) entered standardised (by their population mean and sd, so that
every site codes them alike), x3 categorical with probabilities (0.52, 0.21, 0.27)
coded as two dummies, beta = (-4.20753, 0.33348, -0.25252, 1.20088, 0.53604) and a
random intercept per cluster with sd 1.078."""

import numpy as np
import pandas as pd

BETA = np.array([-4.20753, 0.33348, -0.25252, 1.20088, 0.53604])
SIGMA = 1.078
FORMULA = "y ~ x1 + x2 + C(x3)"


def simulate(m=30, n_h=100, seed=0):
    rng = np.random.default_rng(seed)
    N = m * n_h
    g = np.repeat(np.arange(m), n_h)
    x1 = (rng.normal(7.29, 9.34, N) - 7.29) / 9.34
    x2 = (rng.poisson(63.5, N) - 63.5) / np.sqrt(63.5)
    x3 = rng.choice(np.array(["a", "b", "c"]), N, p=[0.52, 0.21, 0.27])
    eta = (BETA[0] + BETA[1] * x1 + BETA[2] * x2 + BETA[3] * (x3 == "b") + BETA[4] * (x3 == "c")
           + rng.normal(0, SIGMA, m)[g])
    y = (rng.random(N) < 1 / (1 + np.exp(-eta))).astype(np.int64)
    return pd.DataFrame({"cluster": g, "y": y, "x1": x1, "x2": x2, "x3": x3})


#: The CHOP demo of the paper's repository (57 clinics, 6,330 rows): its actual-data glmer
#: estimates (federated.md section 1b) as the truth, in the order of CHOP_FORMULA's columns.
CHOP_BETA = np.array([-4.173, -0.163, 1.214, 0.535, 0.328, -0.253, 0.338])
CHOP_SIGMA = 1.076
CHOP_FORMULA = "y ~ male + C(patient_class) + drive_thru + day + age"


def simulate_chop(seed=0, m=57, n=6330):
    """A data set shaped like the CHOP demo: m clinics, n rows, binary gender and
    drive-thru, a 3-level patient class, standardised pandemic day and age."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(m), np.diff(np.linspace(0, n, m + 1).round().astype(int)))
    male, drive = rng.random(n) < 0.5, rng.random(n) < 0.2
    cls = rng.choice(np.array(["inpatient", "emergency", "outpatient"]), n, p=[0.6, 0.3, 0.1])
    day, age = rng.normal(size=n), rng.normal(size=n)
    X = np.column_stack([male, cls == "emergency", cls == "outpatient", drive, day, age])
    eta = CHOP_BETA[0] + X @ CHOP_BETA[1:] + rng.normal(0, CHOP_SIGMA, m)[g]
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(np.int64)
    return pd.DataFrame({"clinic": g, "y": y, "male": male.astype(int),
                         "patient_class": pd.Categorical(cls, ["inpatient", "emergency", "outpatient"]),
                         "drive_thru": drive.astype(int), "day": day, "age": age})
