"""The crossed engine on a Dask cluster (distributed.LocalCluster): the same fit as in
process, whatever the workers and the partitioning; errors that name the partition;
a worker lost mid-fit; lazy scoring."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

import pyglmm
from cases import small_crossed

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

# The driver runs the in-process loop on sums reduced over partitions: only the order of
# floating-point additions differs (measured: coef 1.5e-14, se 4e-17, sigma 1e-16 apart).
EXACT = dict(rtol=0, atol=1e-10)
FORMULA = "y ~ x1 + x2 + (1|g0) + (1|g1)"
# Fewer outer iterations (every pass is a round trip to the cluster): the comparisons stay
# exact, both fits run with the same options; one test fits at the defaults.
FAST = dict(tol=1e-6, var_tol=1e-2)


@pytest.fixture(scope="module")
def clusters():
    """LocalClusters by (workers, processes), started when first asked for."""
    made = {}

    def get(workers, processes=False):
        if (workers, processes) not in made:
            cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                               processes=processes, dashboard_address=":0")
            made[workers, processes] = (cluster, distributed.Client(cluster, set_as_default=False))
        return made[workers, processes][1]

    yield get
    for cluster, client in made.values():
        client.close()
        cluster.close()


def binomial_frame(n=600):
    X, y, groups = small_crossed(n=n)
    return pd.DataFrame({"x1": X[:, 0], "x2": X[:, 1], "y": y, **groups})


def assert_same_fit(got, want):
    np.testing.assert_allclose(got.coef, want.coef, **EXACT)
    np.testing.assert_allclose(got.se, want.se, **EXACT)
    np.testing.assert_allclose(got.sigma, want.sigma, **EXACT)
    np.testing.assert_allclose(got.dispersion, want.dispersion, **EXACT)
    for f in want.b:
        assert got.b[f].index.equals(want.b[f].index)
        np.testing.assert_allclose(got.b[f], want.b[f], **EXACT)
    np.testing.assert_allclose(got.deviance, want.deviance, rtol=1e-12)
    assert (got.iterations, got.inner_sweeps, got.n_obs) == (want.iterations, want.inner_sweeps,
                                                             want.n_obs)


@pytest.mark.parametrize("workers,npartitions,shuffle", [
    (1, 1, None), (2, 3, None), (2, 4, "largest"), (4, 7, None)])
def test_fit_equals_the_in_process_fit(clusters, workers, npartitions, shuffle):
    df = binomial_frame()
    opts = {} if workers == 2 and shuffle is None else FAST
    want = pyglmm.glmm(FORMULA, df, **opts)
    with clusters(workers).as_current():
        got = pyglmm.glmm(FORMULA, dd.from_pandas(df, npartitions=npartitions), shuffle=shuffle,
                          **opts)
    assert_same_fit(got, want)
    assert {k: got.cluster[k] for k in ("workers", "threads", "partitions", "shuffle")} == dict(
        workers=workers, threads=workers, partitions=npartitions, shuffle=shuffle)
    # what crossed the network: per batch (one per worker thread) the sums over its levels
    # (ids, Z'W[X, 1, z]: p + 3 = 6 numbers per level), X'WX, X'Wz, 4 scalars; never rows
    traffic = got.cluster["traffic"]
    assert traffic["stats"]["passes"] == got.iterations + 1
    # each level of g0 in one worker thread's partitions (shuffled by it, or one thread):
    # the standard errors' smoother keeps g0's fits there, and its passes and the sandwich
    # pass move g1's 16 levels and p x p matrices only, never a table over g0's 20 levels
    whole = shuffle == "largest" or workers == npartitions == 1
    assert ("smoother" in traffic) == whole
    if whole:
        for kind in ("smoother", "sandwich"):
            t = traffic[kind]
            assert t["bytes_sent"] / t["passes"] <= 16 * 3 * 8 + 64
            assert t["bytes_received"] / t["passes"] <= workers * (16 * 4 + 3 * 3 * 3) * 8 + 64
    per_pass = traffic["stats"]["bytes_received"] / traffic["stats"]["passes"]
    assert per_pass <= min(workers, npartitions) * (36 * 6 + 3 * 3 + 3 + 4) * 8
    assert f"{workers} worker(s), {workers} thread(s), {npartitions} partition(s)" in str(got)
    back = pyglmm.results.io.from_dict(json.loads(got.to_json(full=True)))  # kept in model files
    assert back.cluster == got.cluster and str(back) == str(got)


def test_three_factors_equal_the_in_process_fit(clusters):
    """A cross-sums pass sends only the other factors' rows of its table: with three
    factors the middle one's pass reads levels on both sides of its own."""
    X, y, groups = small_crossed(n=600, K=3)
    df = pd.DataFrame({"x1": X[:, 0], "x2": X[:, 1], "y": y, **groups})
    formula = FORMULA + " + (1|g2)"
    want = pyglmm.glmm(formula, df, **FAST)
    with clusters(2).as_current():
        got = pyglmm.glmm(formula, dd.from_pandas(df, npartitions=3), **FAST)
    assert_same_fit(got, want)


def test_rows_sorted_by_a_factor_and_string_labels(clusters):
    """Partitions that each hold a few levels of g0 (levels absent from most partitions),
    string labels and a categorical fixed effect coded from the merged levels."""
    df = binomial_frame().sort_values("g0", kind="stable")
    df = df.assign(g1=df.g1.map(lambda v: f"c{v}"), cat=np.where(df.x2 > 0.3, "hi", "lo"))
    formula = "y ~ x1 + C(cat) + (1|g0) + (1|g1)"
    want = pyglmm.glmm(formula, df, **FAST)
    with clusters(2).as_current():
        got = pyglmm.glmm(formula, dd.from_pandas(df, npartitions=5, sort=False), **FAST)
    assert_same_fit(got, want)
    assert list(got.coef.index) == list(want.coef.index) == ["Intercept", "x1", "C(cat)[T.lo]"]


def test_empty_partitions_are_skipped(clusters):
    df = binomial_frame().sort_values("g0", kind="stable")
    ddf = dd.from_pandas(df, npartitions=5, sort=False)
    want = pyglmm.glmm(FORMULA, df[df.g0 < 8], **FAST)
    with clusters(2).as_current():
        got = pyglmm.glmm(FORMULA, ddf[ddf.g0 < 8], **FAST)  # rows of partitions 0-1 and part of 2
    assert_same_fit(got, want)
    assert got.cluster["partitions"] == 3


def test_gaussian_with_weights_offset_and_estimated_dispersion(clusters):
    df = binomial_frame()
    rng = np.random.default_rng(5)
    df = df.assign(y=df.x1 - 0.5 * df.x2 + rng.normal(0, 0.8, 20)[df.g0] + rng.standard_normal(len(df)),
                   w=rng.uniform(0.5, 2.0, len(df)), o=0.3 * rng.standard_normal(len(df)))
    kw = dict(family="gaussian", weights="w", offset="o", **FAST)
    want = pyglmm.glmm(FORMULA, df, **kw)
    with clusters(2).as_current():
        got = pyglmm.glmm(FORMULA, dd.from_pandas(df, npartitions=3), **kw)
    assert want.dispersion_mode == "estimate" and want.dispersion != 1
    assert_same_fit(got, want)


def test_poisson_with_offset(clusters):
    df = binomial_frame()
    rng = np.random.default_rng(6)
    expo = rng.uniform(1, 50, len(df))
    eta = -1 + 0.3 * df.x1 + rng.normal(0, 0.5, 20)[df.g0] + rng.normal(0, 0.3, 16)[df.g1]
    df = df.assign(y=rng.poisson(expo * np.exp(eta)), lexpo=np.log(expo))
    kw = dict(family="poisson", offset="lexpo", **FAST)
    want = pyglmm.glmm(FORMULA, df, **kw)
    with clusters(2).as_current():
        got = pyglmm.glmm(FORMULA, dd.from_pandas(df, npartitions=4), **kw)
    assert_same_fit(got, want)


def test_worker_processes(clusters):
    df = binomial_frame()
    want = pyglmm.glmm(FORMULA, df, **FAST)
    with clusters(2, processes=True).as_current():
        got = pyglmm.glmm(FORMULA, dd.from_pandas(df, npartitions=4), **FAST)
    assert_same_fit(got, want)


@pytest.mark.parametrize("shuffle", [None, "largest"])
def test_a_worker_killed_mid_fit_is_recovered_by_dask(clusters, shuffle):
    """Kill a worker process after the second outer iteration: Dask recomputes its
    partitions and weights from their lineage (the frame, the same inputs), so the fit
    carries on to the same answer (shuffled: with the standard errors' smoother on the
    workers)."""
    df = binomial_frame()
    want = pyglmm.glmm(FORMULA, df, **FAST)
    client = clusters(2, processes=True)
    killed = []

    def kill_one(row):
        if row["iteration"] == 2:
            pid = sorted(client.run(os.getpid).values())[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    with client.as_current():
        got = pyglmm.glmm(FORMULA, dd.from_pandas(df, npartitions=4), callback=kill_one,
                          shuffle=shuffle, **FAST)
    assert killed
    assert_same_fit(got, want)


@pytest.mark.parametrize("column,value,message", [
    ("x2", np.nan, r"partition 2: column 'x2' has 1 NaN or infinite value\(s\), first at row 333"),
    ("y", np.inf, r"partition 2: .*'y'.* 1 NaN or infinite value\(s\), first at row 333"),
    ("g1", None, r"partition 2: grouping column 'g1' has 1 missing value\(s\), first at row 333"),
])
def test_a_bad_value_names_the_column_and_the_partition(clusters, column, value, message):
    df = binomial_frame()
    df[column] = df[column].astype(object if value is None else float)
    df.loc[333, column] = value
    with clusters(2).as_current(), pytest.raises(pyglmm.DataError, match=message):
        pyglmm.glmm(FORMULA, dd.from_pandas(df, npartitions=4))  # rows 300-449: partition 2


def test_degenerate_data_are_diagnosed_as_in_process(clusters):
    """The checks that read the rows run on the partitions: separation by a category
    (the monitor's certificate pass) and a response pure within every level of a factor."""
    rng = np.random.default_rng(0)
    df = binomial_frame().assign(cat=rng.choice(list("abcd"), 600))
    df["y"] = np.where(df.cat == "d", 1.0, df.y)  # category d: every response is 1
    formula = "y ~ x1 + C(cat) + (1|g0) + (1|g1)"
    with pytest.warns(pyglmm.SeparationWarning):
        want = pyglmm.glmm(formula, df, **FAST)
    with clusters(2).as_current():
        with pytest.warns(pyglmm.SeparationWarning, match=r"quasi-complete separation by "
                                                          r"'C\(cat\)\[T\.d\]'"):
            got = pyglmm.glmm(formula, dd.from_pandas(df, npartitions=3), **FAST)
        assert got.separation == want.separation == ["C(cat)[T.d]"]
        assert got.iterations == want.iterations
        np.testing.assert_allclose(got.coef, want.coef, **EXACT)
        pure = df.assign(y=(df.g0 % 3 == 0).astype(float))
        with pytest.raises(pyglmm.DataError, match=r"all 0 or all 1 within every level of factor "
                                                   r"'g0': 13 levels all 0, 7 all 1"):
            pyglmm.glmm(FORMULA, dd.from_pandas(pure, npartitions=3))


def test_arguments_that_cannot_be_distributed_are_refused(clusters):
    ddf = dd.from_pandas(binomial_frame(), npartitions=2)
    with clusters(1).as_current():
        with pytest.raises(TypeError, match="weights must be a column name"):
            pyglmm.glmm(FORMULA, ddf, weights=np.ones(600))
        with pytest.raises(NotImplementedError, match="compare_naive"):
            pyglmm.glmm(FORMULA, ddf, compare_naive=True)
        with pytest.raises(ValueError, match="shuffle must be None or 'largest'"):
            pyglmm.glmm(FORMULA, ddf, shuffle="g0")
        with pytest.raises(pyglmm.DataError, match="grouping factor 'g2'"):
            pyglmm.glmm("y ~ x1 + (1|g2)", ddf)
    with pytest.raises(TypeError, match="shuffle is for a dask DataFrame"):
        pyglmm.glmm(FORMULA, binomial_frame(), shuffle="largest")


def test_no_client_is_a_clear_error():
    code = ("import dask.dataframe as dd, pandas as pd, pyglmm\n"
            "df = pd.DataFrame({'y': [0., 1.] * 5, 'x': range(10), 'g': [1, 2] * 5})\n"
            "pyglmm.glmm('y ~ x + (1|g)', dd.from_pandas(df, npartitions=2))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode != 0
    assert "ValueError: fitting a dask DataFrame needs a dask.distributed Client" in run.stderr


def test_predict_is_lazy_and_equals_in_process_scoring(clusters, tmp_path):
    df = binomial_frame()
    res = pyglmm.glmm(FORMULA, df, **FAST)
    new = df.assign(g0=np.where(np.arange(len(df)) % 7 == 0, 99, df.g0))  # unseen level 99
    with clusters(2, processes=True).as_current():
        lazy = res.predict(dd.from_pandas(new, npartitions=3), type="response")
        assert isinstance(lazy, dd.Series) and lazy.npartitions == 3
        got = lazy.compute()
        pd.testing.assert_series_equal(got, res.predict(new, type="response"), rtol=1e-14,
                                       check_names=False)
        res.save(tmp_path / "m.json")  # a loaded model scores the same
        again = pyglmm.load(tmp_path / "m.json").predict(dd.from_pandas(new, npartitions=2))
        np.testing.assert_allclose(again.compute(), res.predict(new), rtol=1e-14)
        with pytest.raises(pyglmm.DataError, match="grouping column 'g0' has level 99, not seen"):
            res.predict(dd.from_pandas(new, npartitions=3), new_levels="error").compute()


def categorical_frame(n=600):
    """binomial_frame with categoricals of several kinds (strings, a pandas categorical
    in its own category order, integers through C(), a boolean) among numeric columns."""
    rng = np.random.default_rng(11)
    df = binomial_frame(n)
    cat3 = rng.choice(["a", "b", "c"], n)
    kind = pd.Categorical(rng.choice(["z", "y", "x"], n), categories=["z", "y", "x"])
    k = rng.integers(0, 4, n)
    eta = (df.x1 - 0.5 + 0.6 * (cat3 == "b") - 0.4 * (k == 2) + 0.5 * (kind == "x")
           + rng.normal(0, 0.9, 20)[df.g0] + rng.normal(0, 0.8, 16)[df.g1])
    return df.assign(cat3=cat3, kind=kind, k=k, flag=rng.random(n) < 0.3,
                     y=(rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float))


CATEGORICAL = "y ~ x1 + C(cat3) + flag + kind + C(k) + x2 + (1|g0) + (1|g1)"


@pytest.mark.parametrize("workers,npartitions,formula,order", [
    (1, 1, CATEGORICAL, None), (2, 3, CATEGORICAL, None), (2, 5, CATEGORICAL, "cat3"),
    (2, 4, CATEGORICAL, "shuffle"), (2, 3, "y ~ 0 + C(cat3) + x1 + kind + (1|g0) + (1|g1)", "k")])
def test_categoricals_are_codes_in_the_partitions_and_fit_as_in_process(
        clusters, workers, npartitions, formula, order):
    """The partitions keep categoricals as codes (Design.xcat) in the design's column
    order, the result reorders them as users see them: the same fit as in process, with
    rows sorted by a categorical (partitions without some of its levels), shuffled, and
    without an intercept (the first categorical gets every level's column).  Measured:
    coef 7.3e-15, se 2.3e-15, sigma 3.3e-16 apart (EXACT: 1e-10)."""
    df = categorical_frame()
    if order in ("cat3", "k"):
        df = df.sort_values(order, kind="stable")
    want = pyglmm.glmm(formula, df, **FAST)
    with clusters(workers).as_current():
        got = pyglmm.glmm(formula, dd.from_pandas(df, npartitions=npartitions, sort=False),
                          shuffle="largest" if order == "shuffle" else None, **FAST)
    assert list(got.coef.index) == list(want.coef.index)
    assert len(want.coef) == (11 if formula == CATEGORICAL else 6)
    assert_same_fit(got, want)


def test_a_partition_holds_the_categoricals_as_codes():
    from pyglmm.data.coding import FixedCoding
    from pyglmm.engines.crossed.cluster import partition as P

    df = categorical_frame()
    parsed = pyglmm.data.formula.parse_formula(CATEGORICAL)
    coding = FixedCoding.from_data(parsed.fixed, df)
    levels = tuple(pd.Index(np.unique(df[g]), name=g) for g in parsed.groups)
    spec = P.ModelSpec(coding, "y", tuple(parsed.groups), levels,
                       np.cumsum([0] + [len(lv) for lv in levels]), "binomial",
                       {"weights": None, "trials": None, "offset": None}, "numpy")
    part = P.build(df.iloc[100:300], spec, "partition 1")
    d = part.d
    assert d.feature_names == coding.design_names and d.p == 11
    assert d.X.shape == (200, 4) and d.xcat.shape == (200, 3)  # Intercept x1 flag x2; 3 factors
    dense = coding.matrix(df.iloc[100:300])  # the same rows as dummy columns, users' order
    order = np.ix_(coding.coef_order, coding.coef_order)
    np.testing.assert_allclose(d.XtX[order], dense.T @ dense, rtol=1e-14)  # measured 7e-16
    np.testing.assert_allclose(P.summary(part)["colsum"][coding.coef_order], dense.sum(axis=0),
                               rtol=1e-14)


@pytest.mark.parametrize("family", ["binomial", "gaussian"])
def test_a_partition_whose_weights_are_all_zero_is_fitted_as_in_process(clusters, family):
    """Zero prior weights are allowed where some row has a positive one: a partition whose
    rows all have weight 0 (here with levels of g0 that occur in no other partition)
    counts for nothing, as in process; all-zero weights in all partitions are refused
    as in process.  Measured: coef 3.3e-16 (binomial), 2.4e-14 (gaussian) apart."""
    df = binomial_frame().sort_values("g0", kind="stable").reset_index(drop=True)
    if family == "gaussian":
        rng = np.random.default_rng(7)
        df["y"] = (df.y + df.x1 + rng.normal(0, 1, 20)[df.g0] + rng.normal(0, 1, 16)[df.g1]
                   + rng.standard_normal(len(df)))
    df = df.assign(w=np.where((df.index >= 150) & (df.index < 300), 0.0, 1.0))
    assert not set(df.g0[150:300]) <= set(df.g0[df.w > 0])  # levels with no weight at all
    want = pyglmm.glmm(FORMULA, df, family=family, weights="w", **FAST)
    with clusters(2).as_current():
        got = pyglmm.glmm(FORMULA, dd.from_pandas(df, npartitions=4, sort=False), family=family,
                          weights="w", **FAST)  # rows 150-299: partition 1
        assert_same_fit(got, want)
        with pytest.raises(pyglmm.DataError, match="weights column 'w': every weight is zero"):
            pyglmm.glmm(FORMULA, dd.from_pandas(df.assign(w=0.0), npartitions=4), family=family,
                        weights="w")


def test_warnings_raised_on_the_workers_reach_the_driver(clusters):
    """A warning of a partition's build on a worker process (here: non-integer poisson
    counts) is raised in the driver as the same class, naming the partition and
    pointing at the caller's line; partitions that warn alike make one warning."""
    df = binomial_frame()
    rng = np.random.default_rng(8)
    eta = 1 + 0.3 * df.x1 + rng.normal(0, 0.6, 20)[df.g0] + rng.normal(0, 0.6, 16)[df.g1]
    df["y"] = rng.poisson(np.exp(eta)).astype(float)
    df.loc[[310, 320, 470], "y"] = 0.5  # partition 2 (rows 300-449): 2, partition 3: 1
    with pytest.warns(UserWarning, match=r"3 non-integer count\(s\) for the poisson family"):
        want = pyglmm.glmm(FORMULA, df, family="poisson", **FAST)
    with clusters(2, processes=True).as_current():
        with pytest.warns(UserWarning) as caught:
            got = pyglmm.glmm(FORMULA, dd.from_pandas(df, npartitions=4), family="poisson", **FAST)
    mine = [w for w in caught if "non-integer" in str(w.message)]
    assert len(mine) == 1 and mine[0].category is UserWarning and mine[0].filename == __file__
    assert str(mine[0].message) == (
        "partition 2: response 'y' has 2 non-integer count(s) for the poisson family, first 0.5 "
        "at row 310; fitting them as quasi-Poisson data; partition 3: response 'y' has 1 "
        "non-integer count(s) for the poisson family, first 0.5 at row 470; fitting them as "
        "quasi-Poisson data")
    assert_same_fit(got, want)


def test_a_cluster_that_cannot_run_the_tasks_is_a_clear_error_not_a_hang(monkeypatch):
    """Where Dask would wait for ever (no worker left, or every worker paused at its
    memory limit) the driver stops after a while, and when Dask gives up on a task whose
    workers kept dying it says what to do; both name the cause."""
    import dask
    from distributed.scheduler import KilledWorker

    from pyglmm.engines.crossed.cluster.passes import gather

    with distributed.LocalCluster(n_workers=0, dashboard_address=":0") as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        with pytest.raises(pyglmm.ClusterError, match=r"the fit stopped: for 1 s the Dask cluster has no "
                                               r"worker; most often a worker over its memory limit"):
            gather(client, [client.submit(sum, [1, 2])], poll=0.2, stall=1)
    with distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        slow = client.submit(time.sleep, 3, pure=False)
        workers = client.scheduler_info()["workers"]
        paused = {"workers": {a: {**w, "status": "paused", "memory_limit": 2**30} for a, w in workers.items()}}
        monkeypatch.setattr(client, "scheduler_info", lambda **kw: paused)  # as Dask reports it
        with pytest.raises(pyglmm.ClusterError, match=r"for 1 s the Dask cluster has had every worker paused "
                                               r"at its memory limit \(1.00 GiB\); most often"):
            gather(client, [slow], poll=0.2, stall=1)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            distributed.LocalCluster(n_workers=1, processes=True, memory_limit="2GB",
                                     dashboard_address=":0") as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        with pytest.raises(pyglmm.ClusterError, match=r"gave up on its task '_exit-.*' after 1 worker\(s\) "
                                               r"died running it \(the last with a memory limit of "
                                               r"1.86 GiB\); most often a worker over its memory "
                                               r"limit: give the workers more memory") as caught:
            gather(client, [client.submit(os._exit, 1, pure=False)])
        assert isinstance(caught.value.__cause__, KilledWorker)
