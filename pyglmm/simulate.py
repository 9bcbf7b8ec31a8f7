"""Simulated data: the design of Ghosh, Hastie & Owen (2022, Sec. 5) and a
problem shaped like their Stitch Fix data (Sec. 6)."""

import numpy as np
import pandas as pd

from .families import expit

CELLS_PER_CHUNK = 1 << 22


def simulate_crossed(S=1_000_000, *, beta="trend", rho=0.56, kappa=0.56, upsilon=1.2716,
                     sigma=(0.8, 0.4), gamma=0.5, seed=0):
    r"""Crossed binary data as in Section 5 of the paper.

    :math:`R = \lceil S^\rho \rceil` rows and :math:`C = \lceil S^\kappa \rceil`
    columns; cell (i, j) is observed with probability :math:`U_{ij} S/(RC)`,
    :math:`U_{ij} \sim U(1, \Upsilon)`, so :math:`E(N) \approx 1.14 S`.
    Covariates :math:`x \sim N_7(0, \Sigma)`, :math:`\Sigma_{kl} = \gamma^{|k-l|}`;
    :math:`\beta_0 = -2` and :math:`\beta_l = 0` (``beta="zero"``) or
    :math:`-2 + 0.5 l` (``"trend"``); :math:`a_i \sim N(0, \sigma_A^2)`,
    :math:`b_j \sim N(0, \sigma_B^2)`;
    :math:`y \sim \mathrm{Bernoulli}(\mathrm{logit}^{-1}(x^\top\beta + a_i + b_j))`.

    Returns
    -------
    pandas.DataFrame
        Columns ``row``, ``col``, ``y``, ``x1`` .. ``x7``.
    """
    rng = np.random.default_rng(seed)
    R, C = int(np.ceil(S**rho)), int(np.ceil(S**kappa))
    p_cell = S / (R * C)
    rows, cols = [], []
    per_chunk = max(1, CELLS_PER_CHUNK // C)
    for start in range(0, R, per_chunk):
        r = min(per_chunk, R - start)
        hit = rng.random((r, C)) < rng.uniform(1.0, upsilon, (r, C)) * p_cell
        i, j = np.nonzero(hit)
        rows.append(i + start)
        cols.append(j)
    row, col = np.concatenate(rows).astype(np.int32), np.concatenate(cols).astype(np.int32)
    n = row.size
    slopes = {"trend": -2 + 0.5 * np.arange(1, 8), "zero": np.zeros(7)}[beta] if isinstance(beta, str) \
        else np.asarray(beta, dtype=float)
    x = np.empty((n, 7))
    x[:, 0] = rng.standard_normal(n)
    for l in range(1, 7):
        x[:, l] = gamma * x[:, l - 1] + np.sqrt(1 - gamma**2) * rng.standard_normal(n)
    a = rng.normal(0.0, sigma[0], R)
    b = rng.normal(0.0, sigma[1], C)
    eta = -2.0 + x @ slopes + a[row] + b[col]
    y = (rng.random(n) < expit(eta)).astype(np.int8)
    df = pd.DataFrame({"row": row, "col": col, "y": y})
    for l in range(7):
        df[f"x{l + 1}"] = x[:, l]
    return df


def simulate_stitchfix(n_rows=5_000_000, n_clients=744_482, n_items=3_547, *, sigma=(0.82, 0.46),
                       seed=0, as_frame=False):
    """A binary crossed problem with the Stitch Fix data's shape (Sec. 6).

    Clients are drawn uniformly (about 6.7 rows each), items by a Zipf(0.7)
    popularity (the most popular item has about 2.6% of the rows, as in the
    paper).  Covariates: client fit profile (6 levels), edgy, boho, chest
    size, dress size (per client); material (20 levels) and item fit profile
    (6 levels) (per item; material is nested in item).  One-hot coded against
    their first level and with the intercept, p = 34.

    Parameters
    ----------
    as_frame : bool
        Return the data as a DataFrame (the columns a user would have) instead
        of arrays.

    Returns
    -------
    pandas.DataFrame (``as_frame=True``)
        Columns ``y`` (0/1, int8), ``client``, ``item`` (int32 ids),
        ``client_fit``, ``material``, ``item_fit`` (pandas categoricals with
        integer categories, those that occur), ``edgy``, ``boho`` (bool), ``chest``, ``dress``
        (float).  Fit it with ``y ~ C(client_fit) + edgy + boho + chest + dress
        + C(material) + C(item_fit) + (1|client) + (1|item)``.
    X, y, groups, feature_names (``as_frame=False``)
        ``X`` (n_rows, 34) C-contiguous with the intercept first (fit with
        ``intercept=False``; fewer columns if some level never occurs), ``y``
        float, ``groups = {"client": ids, "item": ids}`` and the column names
        (``client_fit[T.1]``, ...).
    """
    rng = np.random.default_rng(seed)
    client = rng.integers(0, n_clients, n_rows).astype(np.int32)
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.7
    item = rng.choice(n_items, n_rows, p=pop / pop.sum()).astype(np.int32)
    c_fit = rng.integers(0, 6, n_clients).astype(np.int8)
    c_edgy, c_boho = rng.random(n_clients) < 0.3, rng.random(n_clients) < 0.2
    c_chest, c_dress = rng.standard_normal(n_clients), rng.standard_normal(n_clients)
    i_mat, i_fit = rng.integers(0, 20, n_items).astype(np.int8), rng.integers(0, 6, n_items).astype(np.int8)
    beta = np.concatenate([[-1.0], rng.normal(0.0, 0.3, 33)])
    # beta by coded column: intercept, client_fit 1-5, edgy, boho, chest, dress, material 1-19, item_fit 1-5
    b_fit, b_mat, b_ifit = (np.concatenate([[0.0], beta[a:b]]) for a, b in ((1, 6), (10, 29), (29, 34)))
    client_eta = (b_fit[c_fit] + beta[6] * c_edgy + beta[7] * c_boho + beta[8] * c_chest
                  + beta[9] * c_dress + rng.normal(0, sigma[0], n_clients))
    item_eta = b_mat[i_mat] + b_ifit[i_fit] + rng.normal(0, sigma[1], n_items)
    eta = beta[0] + client_eta[client] + item_eta[item]
    y = (rng.random(n_rows) < expit(eta)).astype(np.int8)
    category = lambda codes, q: pd.Categorical.from_codes(  # noqa: E731
        codes, categories=np.arange(q)).remove_unused_categories()  # few items: some never occur
    df = pd.DataFrame({"y": y, "client": client, "item": item,
                       "client_fit": category(c_fit[client], 6), "edgy": c_edgy[client],
                       "boho": c_boho[client], "chest": c_chest[client], "dress": c_dress[client],
                       "material": category(i_mat[item], 20), "item_fit": category(i_fit[item], 6)})
    if as_frame:
        return df
    from .data.coding import FixedCoding

    coding = FixedCoding.from_data("client_fit + edgy + boho + chest + dress + material + item_fit", df)
    return coding.matrix(df), y.astype(np.float64), {"client": client, "item": item}, coding.names
