"""Separation in the federated fit: the coordinator asks the sites for a certificate
(two counts, no rows) and flags exactly what the pooled AGQ fit flags; the 'certify'
request and its answer are validated like every other message, and version-1 sites
still take part (without the check, which the result says)."""

import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pyglmm
from pyglmm import SeparationWarning
from pyglmm.engines.agq import glmm_agq
from pyglmm.engines.federated import schema
from pyglmm.engines.federated.api import fit_federated
from pyglmm.engines.federated.coordinator import Coordinator
from pyglmm.engines.federated.schema import FederatedError
from pyglmm.engines.federated.site import Site
from pyglmm.engines.federated.transports import InProcess, LocalProcess, in_process

sys.path.insert(0, str(Path(__file__).parents[1] / "agq"))
from test_agq_separation import M, by_cluster_covariate, data  # noqa: E402
from test_fed_protocol import COUNTS, Scripted  # noqa: E402, I001 (tests/engines/federated is on the path)


def sites(df):
    """Three sites, each holding whole clusters."""
    return {f"site{k}": g for k, g in df.groupby(df.g % 3)}


def poisson_zeros():
    df = data()
    rng = np.random.default_rng(2)
    y = rng.poisson(np.exp(0.3 + 0.2 * df.x + rng.normal(0, 0.5, M)[df.g]))
    return df.assign(y=np.where(df.cat == "c", 0, y))


CASES = {"cluster covariate": ("y ~ x + w + (1|g)", by_cluster_covariate, "binomial", 1),
         "poisson zeros": ("y ~ x + C(cat) + (1|g)", poisson_zeros, "poisson", 3),
         "complete": ("y ~ x + (1|g)", lambda: data().assign(y=lambda d: (d.x > 0).astype(float)),
                      "binomial", 1)}


def fits(formula, df, family, nagq):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pooled = glmm_agq(formula, df, family=family, nagq=nagq)
        fed = fit_federated(in_process(sites(df)), formula, family=family, nagq=nagq)
    separation = [str(w.message) for w in caught if w.category is SeparationWarning]
    return pooled, fed, separation


@pytest.mark.parametrize("case", CASES)
def test_federated_and_pooled_fits_flag_the_same_columns(case):
    formula, make, family, nagq = CASES[case]
    pooled, fed, messages = fits(formula, make(), family, nagq)
    assert pooled.separation == fed.separation and len(pooled.separation) == 1
    assert len(messages) == 2  # one warning each, with the same columns and rows
    assert messages[0].split(";")[0] == messages[1].split(";")[0]
    assert not pooled.converged and not fed.converged
    assert np.isnan(fed.se[fed.separation]).all() and np.isnan(pooled.se[pooled.separation]).all()
    if case != "complete":  # the other estimates: the same limit (measured 1.1e-7, pooled tol 1e-10)
        rest = pooled.coef.index.drop(pooled.separation)
        np.testing.assert_allclose(fed.coef[rest], pooled.coef[rest], atol=1e-6)
        np.testing.assert_allclose(fed.se[rest], pooled.se[rest], atol=1e-6)
        assert fed.loglik == pytest.approx(pooled.loglik, abs=1e-8)
    # the separated coefficients no longer crawl (107 rounds before on the first case), nor
    # does a fit with nothing left to estimate (complete separation: thousands of rounds
    # in Li et al.'s 2 x 30 setting before every coordinate was fixed)
    assert fed.rounds < 30


LI_COLUMNS = ["b1", "b2", "b3", "c1", "c2", "c3", "u1", "u2", "u3"]
LI_FORMULA = f"y ~ {' + '.join(LI_COLUMNS)} + (1|site)"


@pytest.mark.parametrize("case, column", [("li5_rep13", "b2"), ("li5_rep89", "b2"),
                                          ("li6_rep94", "b1")])
def test_li_separation_beside_a_diverging_variance_is_flagged_by_both(case, column):
    """Li et al. settings 5 and 6 (2 sites x 30 rows; tests/fixtures/README.md): every row
    with the separating binary column at 1 has y = 0, so its coefficient has no finite
    estimate, and the sites' intercepts separate the other rows too.  From beta = 0 the
    federated fit first drives the fixed effects and sigma up together; then b2 creeps
    alone by steps of 1 at -120 (rep 13) or beside b1 (rep 89), or b1 stops at -15 beside
    an intercept of -103 (rep 94).  It reported "converged" with sigma in the hundreds
    and no separation; the pooled fit, from the GLM start, flagged the column."""
    df = pd.read_csv(Path(__file__).parents[2] / "fixtures" / f"sites_{case}.csv")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fed = fit_federated(in_process({f"site{s}": g for s, g in df.groupby("site")},
                                       min_cluster_size=1), LI_FORMULA)
        pooled = glmm_agq(LI_FORMULA, df)
    messages = [str(w.message) for w in caught if w.category is SeparationWarning]
    assert fed.separation == pooled.separation == [column]
    assert len(messages) == 2 and all(f"separation by {column!r}" in m for m in messages)
    assert not fed.converged and not pooled.converged
    assert np.isnan(fed.se[column]) and np.isnan(pooled.se[column])
    assert (df.y[df[column] == 1] == 0).all()  # the certificate's claim, on the rows


def exact_loglik(df, beta, sigma):
    """The random-intercept logit model's log-likelihood by the rectangle rule on a fine
    grid of the standardised effect (the integrand is nearly a step at a huge sigma)."""
    X = np.column_stack([np.ones(len(df)), df[LI_COLUMNS].to_numpy()])
    u = np.linspace(-12.0, 12.0, 200001)
    log_w = -0.5 * u**2 - 0.5 * np.log(2 * np.pi) + np.log(u[1] - u[0])
    total = 0.0
    for _, rows in df.groupby("site").groups.items():
        eta = (X[rows] @ beta)[:, None] + sigma * u
        sign = np.where(df.y.to_numpy()[rows] == 1, 1.0, -1.0)[:, None]
        terms = -np.logaddexp(0.0, -sign * eta).sum(axis=0) + log_w
        top = terms.max()
        total += top + np.log(np.exp(terms - top).sum())
    return total


def test_li_huge_variance_is_not_reported_as_converged():
    """Li et al. setting 5 rep 99 (tests/fixtures/README.md): no column separates the rows
    alone, the sites' intercepts with the fixed effects do.  Both fits stop, "converged",
    at the same point of the Laplace objective with sigma = 470 and an intercept in the
    hundreds; the exact likelihood there is far below the Laplace value and rises as the
    estimates are scaled up together, so they are no maximum: both say so."""
    df = pd.read_csv(Path(__file__).parents[2] / "fixtures" / "sites_li5_rep99.csv")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fed = fit_federated(in_process({f"site{s}": g for s, g in df.groupby("site")},
                                       min_cluster_size=1), LI_FORMULA)
        pooled = glmm_agq(LI_FORMULA, df)
    messages = [str(w.message) for w in caught if w.category is pyglmm.ConvergenceWarning]
    assert len(messages) == 2
    assert all("random effect '(Intercept)' of 'site'" in m for m in messages)
    for res in (fed, pooled):
        assert not res.converged and res.separation == [] and float(res.sigma.iloc[0]) > 100
    assert fed.loglik == pytest.approx(pooled.loglik, abs=1e-8)  # the same point
    beta, sigma = pooled.coef.to_numpy(), float(pooled.sigma.iloc[0])
    along = [exact_loglik(df, k * beta, k * sigma) for k in (1, 2, 4)]
    assert along[0] < along[1] < along[2] and along[0] < pooled.loglik - 1


def test_local_processes_flag_separation_as_in_process(tmp_path):
    df = by_cluster_covariate()
    paths = {}
    for name, frame in sites(df).items():
        paths[name] = tmp_path / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
    with pytest.warns(SeparationWarning, match="quasi-complete separation by 'w'"):
        fed = fit_federated([LocalProcess(p, n) for n, p in paths.items()], "y ~ x + w + (1|g)")
    with pytest.warns(SeparationWarning):
        inproc = fit_federated(in_process(sites(df)), "y ~ x + w + (1|g)")
    assert fed.separation == inproc.separation == ["w"]
    np.testing.assert_allclose(fed.coef, inproc.coef, rtol=1e-12)


class Counting(InProcess):
    """In-process site connection that counts the requests by kind."""

    def __init__(self, site, kinds):
        super().__init__(site)
        self.kinds = kinds

    def send(self, data):
        kind = schema.decode(data, schema.REQUESTS)["kind"]
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        super().send(data)


def test_regular_federated_fits_send_no_certify_request():
    kinds = {}
    df = data()
    fed = fit_federated([Counting(Site(f, n), kinds) for n, f in sites(df).items()],
                        "y ~ x + C(cat) + w + (1|g)")
    assert fed.converged and fed.separation == [] and "certify" not in kinds


# --- the protocol ------------------------------------------------------------------------


def ask(site, kind, **fields):
    return schema.decode(site.handle(schema.encode(schema.message(kind, **fields))), schema.ANSWERS)


@pytest.fixture
def ready_site():
    site = Site(by_cluster_covariate().query("g % 3 == 0"), "north")
    coding = ask(site, "describe", formula="y ~ x + w + (1|g)", family="binomial", salt="ab" * 32,
                 weights=None, trials=None, offset=None)["coding"]
    ready = ask(site, "setup", coding=coding, nagq=1)
    return site, ready


def test_site_answers_certify_with_two_counts(ready_site):
    site, ready = ready_site
    df = by_cluster_covariate().query("g % 3 == 0")
    squares = schema.unpack_array(ready["column_squares"], "column_squares", (3,))
    np.testing.assert_allclose(squares, [len(df), (df.x ** 2).sum(), (df.w ** 2).sum()], rtol=1e-15)
    answer = ask(site, "certify", round=4, delta=schema.pack_array([0.0, 0.0, 1.0]))
    assert answer["kind"] == "certificate" and answer["version"] == 2 and answer["round"] == 4
    assert answer["consistent"] is True and answer["rows"] == int(df.w.sum())
    assert set(answer) == {"schema", "version", "kind", "site", "counts", "round", "consistent", "rows"}
    answer = ask(site, "certify", round=5, delta=schema.pack_array([0.0, 1.0, 0.0]))
    assert answer["consistent"] is False and answer["rows"] == len(df)


@pytest.mark.parametrize("change, field, words", [
    ({"delta": schema.pack_array([1.0, 2.0])}, "delta", "shape [2] but [3] expected"),
    ({"delta": schema.pack_array([1.0, np.inf, 0.0])}, "delta", "NaN or infinite"),
    ({"round": 0}, "round", "outside"),
    ({"version": 1}, "version", "'certify' needs version 2"),
])
def test_site_refuses_a_bad_certify_request(ready_site, change, field, words):
    site, _ = ready_site
    request = schema.message("certify", round=1, delta=schema.pack_array([0.0, 0.0, 1.0]))
    request.update(change)
    answer = schema.decode(site.handle(schema.encode(request)), schema.ANSWERS)
    assert answer["kind"] == "refusal" and answer["field"] == field and words in answer["reason"]


def test_site_refuses_certify_before_setup():
    site = Site(by_cluster_covariate(), "north")
    answer = ask(site, "certify", round=1, delta=schema.pack_array([1.0]))
    assert answer["field"] == "kind" and "'certify' before 'setup'" in answer["reason"]


def certificate(name, **change):
    msg = schema.message("certificate", site=name, round=1, counts=COUNTS, consistent=True, rows=5)
    msg.update(change)
    return msg


def test_coordinator_sums_the_sites_counts():
    coord = Coordinator([Scripted("east", [certificate("east", rows=3)]),
                         Scripted("west", [certificate("west", consistent=False)])])
    coord.counts = {"east": COUNTS, "west": COUNTS}
    assert coord.certify(np.ones(2)) == (False, 8)


@pytest.mark.parametrize("change, field, words", [
    ({"consistent": 1}, "consistent", "has type int, expected bool"),
    ({"rows": 21}, "rows", r"21 is outside \[0, 20\]"),
    ({"rows": -1}, "rows", "outside"),
    ({"rows": 2.0}, "rows", "has type float"),
    ({"round": 2}, "round", "2 but round 1 was asked"),
    ({"version": 1}, "version", "'certificate' needs version 2"),
    ({"counts": dict(COUNTS, rows=19)}, "counts", "differ from the counts"),
])
def test_coordinator_rejects_a_bad_certificate_naming_site_and_field(change, field, words):
    coord = Coordinator([Scripted("east", [certificate("east")]),
                         Scripted("west", [certificate("west", **change)])])
    coord.counts = {"east": COUNTS, "west": COUNTS}
    with pytest.raises(FederatedError, match=words) as err:
        coord.certify(np.ones(2))
    assert err.value.site == "west" and err.value.field == field


def test_version_1_messages_are_unchanged():
    """The kinds of version 1 are still stamped 1, so a version-1 peer reads them."""
    for kind in ("describe", "setup", "evaluate", "close", "description", "ready", "evaluation",
                 "refusal"):
        assert schema.message(kind)["version"] == 1


class Version1(Site):
    """A site as pyglmm's version 1 made it: no 'column_squares', no 'certify'."""

    def handle(self, request):
        msg = schema.decode(request, schema.REQUESTS)
        if msg["kind"] == "certify":
            return schema.encode(schema.message("refusal", site=self.name, field="kind",
                                                reason="not one of describe, setup, evaluate"))
        answer = schema.decode(super().handle(request), schema.ANSWERS)
        answer.pop("column_squares", None)
        return schema.encode(answer)


def test_version_1_sites_take_part_and_the_result_says_separation_was_not_checked():
    df = by_cluster_covariate()
    connections = [InProcess((Version1 if name == "site1" else Site)(frame, name))
                   for name, frame in sites(df).items()]
    with pytest.warns(UserWarning, match="separation by the fixed effects was not checked: "
                                         "site\\(s\\) 'site1' speak schema version 1"), \
            pytest.warns(pyglmm.ConvergenceWarning, match="did not converge"):  # w crawls on
        fed = fit_federated(connections, "y ~ x + w + (1|g)")
    assert fed.separation == [] and "'site1' speak schema version 1" in fed.warnings[-1]


def test_federated_separation_survives_to_dict():
    df = by_cluster_covariate()
    with pytest.warns(SeparationWarning):
        fed = fit_federated(in_process(sites(df)), "y ~ x + w + (1|g)")
    assert fed.to_dict()["separation"] == ["w"]
    assert "Separation: the estimates of 'w' diverge" in str(fed.summary())
