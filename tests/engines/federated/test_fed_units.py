"""The federated fit equals the pooled one where the pooled fit needs its working
units or drops rows: covariates on extreme scales (the optimiser works on the
columns of X and Z divided by their largest magnitudes, which the sites send in
``ready`` as ``x_max`` and ``z_max``) and prior weights of 0 (each site drops
those rows, as the pooled fit does).  Tolerances as in ``test_fed_exact``.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pyglmm.engines.agq.api import glmm_agq
from pyglmm.engines.federated import schema
from pyglmm.engines.federated.api import fit_federated
from pyglmm.engines.federated.schema import FederatedError
from pyglmm.engines.federated.site import Site
from pyglmm.engines.federated.transports import InProcess, in_process
from test_fed_exact import LI7_FORMULA, assert_same_fit, hospitals, li7_rep98  # noqa: I001 (tests/engines/federated is on the path)


def cbpp(**columns):
    df = pd.read_csv(Path(__file__).parents[2] / "fixtures" / "agq_cbpp.csv")
    df["h"] = "h" + df.herd.astype(str)
    return df.assign(**columns)


def by_herd(df):
    return {"a": df[df.herd <= 7], "b": df[df.herd > 7]}


@pytest.mark.parametrize("scale", [1e12, 1e-8])
def test_a_covariate_on_an_extreme_scale_gives_the_pooled_fit(scale):
    """x = period * 1e12: in the data's units Newton's method stopped at an intercept
    of ~0 and reported convergence; the pooled fit's is -0.93."""
    df = cbpp()
    df["x"] = df.period * scale
    formula = "incidence ~ x + (1|h)"
    fed = fit_federated(in_process(by_herd(df), min_cluster_size=1), formula, nagq=3,
                        trials="size")
    assert_same_fit(fed, glmm_agq(formula, df, nagq=3, trials="size", tol=1e-14))
    df["x"] = df.period  # the same model: coefficient of x times the scale, same intercept
    plain = fit_federated(in_process(by_herd(df), min_cluster_size=1), formula, nagq=3,
                          trials="size")
    np.testing.assert_allclose(fed.coef * [1, scale], plain.coef, rtol=1e-6)


def test_random_slopes_on_extreme_scales_give_the_pooled_fit():
    """Scaled Z columns: Lambda's rows (and its off-diagonal entry) are mapped back."""
    df = hospitals(slopes=True)
    df["t"], df["x"] = df.t * 1e-3, df.x * 1e12
    formula = "y ~ x + t + C(shift) + (1 + t|ward)"
    fed = fit_federated(in_process({f"hospital {h}": g for h, g in df.groupby("hospital")}),
                        formula, nagq=2)
    assert_same_fit(fed, glmm_agq(formula, df, nagq=2, tol=1e-14))


def test_rows_of_weight_zero_are_dropped_as_in_the_pooled_fit():
    """Zero weights, including every row of herd 2 (which then contributes nothing):
    a site refused them before ("weights: entry 0 is 0")."""
    df = cbpp(w=1.0)
    df.loc[[0, 5, 9] + list(np.flatnonzero(df.herd == 2)), "w"] = 0.0
    formula = "incidence ~ C(period) + (1|h)"
    fed = fit_federated(in_process(by_herd(df), min_cluster_size=1), formula, nagq=3,
                        trials="size", weights="w")
    pooled = glmm_agq(formula, df, nagq=3, trials="size", weights="w", tol=1e-14)
    assert_same_fit(fed, pooled)
    assert fed.n_obs == len(df) and fed.n_levels == {"h": 15}


@pytest.mark.parametrize("value, problem", [(-1.0, "negative"), (np.nan, "NaN or infinite")])
def test_a_bad_weight_is_refused_naming_site_column_and_row(value, problem):
    df = cbpp(w=1.0)
    df.loc[40, "w"] = value
    with pytest.raises(FederatedError, match=f"site 'b' refused: field 'data': .*'w'.*{problem}"
                                             ".*40") as err:
        fit_federated(in_process(by_herd(df), min_cluster_size=1), "incidence ~ period + (1|h)",
                      trials="size", weights="w")
    assert err.value.site == "b"


class Answers(Site):
    """A site whose ``ready`` answer is edited by ``edit(answer)``."""

    def __init__(self, data, name, edit):
        super().__init__(data, name, min_cluster_size=1)
        self.edit = edit

    def handle(self, request):
        answer = schema.decode(super().handle(request), schema.ANSWERS)
        if answer["kind"] == "ready":
            self.edit(answer)
        return schema.encode(answer)


def connections(edit):
    parts = by_herd(cbpp())
    return [InProcess(Answers(parts["a"], "a", edit)), InProcess(Site(parts["b"], "b", 1))]


@pytest.mark.parametrize("name, value, problem", [
    ("x_max", [1.0, -4.0], "must be non-negative"), ("z_max", [1.0, 2.0], r"shape \[2\] but \[1\]"),
    ("x_max", [1.0, np.inf], "has NaN or infinite")])
def test_bad_column_maxima_are_refused_naming_site_and_field(name, value, problem):
    def edit(answer):
        answer[name] = schema.pack_array(value)
    with pytest.raises(FederatedError, match=f"site 'a': field '{name}': {problem}") as err:
        fit_federated(connections(edit), "incidence ~ period + (1|h)", trials="size")
    assert (err.value.site, err.value.field) == ("a", name)


def test_a_site_without_column_maxima_takes_part_and_the_result_says_so():
    def edit(answer):
        del answer["x_max"], answer["z_max"]
    with pytest.warns(UserWarning, match="the optimiser worked in the data's units.*site\\(s\\) "
                                         "'a' do not send column maxima"):
        fed = fit_federated(connections(edit), "incidence ~ period + (1|h)", trials="size")
    full = fit_federated(in_process(by_herd(cbpp()), min_cluster_size=1),
                         "incidence ~ period + (1|h)", trials="size")
    np.testing.assert_allclose(fed.coef, full.coef, rtol=1e-6)
    assert "do not send column maxima" in fed.warnings[-1] and not full.warnings


def test_a_trial_point_a_site_cannot_evaluate_is_stepped_back_from():
    """Li et al.'s setting 7, replicate 98, K = 5, in the data's units (sites that do
    not send column maxima): Newton's third step proposes a log-sd of 583, where
    site0's log-likelihood and gradient overflow.  The line search steps back as the
    pooled fit does (before, the site's NaN gradient ended the fit) and the fit
    equals the pooled one."""
    def edit(answer):
        del answer["x_max"], answer["z_max"]
    df, history = li7_rep98(), []
    with pytest.warns(UserWarning, match="the optimiser worked in the data's units"):
        fed = fit_federated([InProcess(Answers(g, f"site{s}", edit)) for s, g in df.groupby("site")],
                            LI7_FORMULA, nagq=5, callback=history.append)
    assert history[2]["step"] < 1  # the trial that overflowed was refused
    assert_same_fit(fed, glmm_agq(LI7_FORMULA, df, nagq=5, tol=1e-14))
