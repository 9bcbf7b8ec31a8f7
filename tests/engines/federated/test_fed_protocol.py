"""The federated protocol without the model's maths: the message schema (exact
float64, versions, shapes), the site's refusals, the coordinator's checks of
every answer, and the cluster-spanning check."""

import numpy as np
import pandas as pd
import pytest

from pyglmm.engines.federated import schema
from pyglmm.engines.federated.api import _Rounds
from pyglmm.engines.federated.coordinator import Coordinator
from pyglmm.engines.federated.schema import FederatedError
from pyglmm.engines.federated.site import Site
from pyglmm.engines.federated.transports import InProcess, in_process

FORMULA = "y ~ x + C(ward) + (1|patient)"


def frame(seed, patients, rows=6, wards=("a", "b")):
    rng = np.random.default_rng(seed)
    n = len(patients) * rows
    return pd.DataFrame({"y": rng.integers(0, 2, n), "x": rng.standard_normal(n),
                         "ward": rng.choice(list(wards), n),
                         "patient": np.repeat(patients, rows)})


# --- schema --------------------------------------------------------------------------


def test_arrays_travel_bit_exactly():
    values = np.array([[0.1, -0.0, 5e-324, 1.7976931348623157e308],
                       [np.pi, -1 / 3, 2.0 ** -1074 * 3, 1e-310]])
    msg = schema.decode(schema.encode(schema.message("evaluation", a=schema.pack_array(values))),
                        schema.ANSWERS)
    back = schema.unpack_array(msg["a"], "a", values.shape)
    assert back.tobytes() == values.tobytes()  # every bit, including the sign of zero
    scalar = schema.unpack_array(schema.pack_array(-123.456789012345678), "s", ())
    assert scalar.shape == () and float(scalar) == -123.456789012345678


@pytest.mark.parametrize("change, field, words", [
    (lambda f: f.update(shape=[3]), "grad", r"shape \[3\] but \[2\] expected"),
    (lambda f: f.update(dtype="float32"), "grad", "dtype must be 'float64'"),
    (lambda f: f.update(data="!!"), "grad", "not base64"),
    (lambda f: f.update(data=schema.pack_array([1.0, np.nan])["data"]), "grad", "NaN"),
    (lambda f: f.update(data=schema.pack_array([1.0])["data"]), "grad", "holds 8 bytes"),
])
def test_bad_arrays_are_refused_naming_site_and_field(change, field, words):
    packed = schema.pack_array([1.0, 2.0])
    change(packed)
    with pytest.raises(FederatedError, match=words) as err:
        schema.unpack_array(packed, "grad", (2,), site="north")
    assert (err.value.site, err.value.field) == ("north", field)
    assert "site 'north'" in str(err.value) and "'grad'" in str(err.value)


def test_encode_refuses_nan_and_decode_checks_the_common_fields():
    with pytest.raises(ValueError):
        schema.encode({"x": float("nan")})
    good = schema.message("refusal", site="s", field="f", reason="r")
    for key, value, words in [("version", 4, "version 4 is not supported"),
                              ("schema", "other", "must be 'pyglmm-federated'"),
                              ("kind", "evaluate", "not one of")]:
        bad = schema.encode(dict(good, **{key: value}))
        with pytest.raises(FederatedError, match=words) as err:
            schema.decode(bad, schema.ANSWERS, site="east")
        assert (err.value.site, err.value.field) == ("east", key)
    with pytest.raises(FederatedError, match="not a JSON object") as err:
        schema.decode(b'{"a": NaN}', schema.ANSWERS, site="east")
    assert err.value.site == "east"


def test_cluster_hash_depends_on_salt_and_key():
    salt = bytes(32)
    assert schema.cluster_hash(7, salt) == schema.cluster_hash("7", salt) == schema.cluster_hash(7.0, salt) \
        == schema.cluster_hash(np.int32(7), salt)  # labels compare by value across the sites' dtypes
    assert schema.cluster_hash(7, salt) != schema.cluster_hash(7, b"\1" + salt[1:])
    assert schema.cluster_hash(7, salt) != schema.cluster_hash(7, salt, b"consortium secret")
    assert len(schema.cluster_hash("ward 3", salt)) == 64


# --- the site's refusals ----------------------------------------------------------------


def describe(site, formula=FORMULA, **change):
    request = schema.message("describe", formula=formula, family="binomial", salt="ab" * 32,
                             weights=None, trials=None, offset=None)
    request.update(change)
    return schema.decode(site.handle(schema.encode(request)), schema.ANSWERS)


def test_site_describes_itself_without_rows():
    answer = describe(Site(frame(0, [1, 2, 3]), "north"))
    assert answer["kind"] == "description" and answer["site"] == "north"
    assert answer["counts"]["rows"] == 18 and answer["counts"]["clusters"] == 3
    assert len(answer["cluster_hashes"]) == 3
    assert answer["coding"]["names"] == ["Intercept", "x", "C(ward)[T.b]"]


@pytest.mark.parametrize("data, request_change, field, words", [
    (frame(0, [1, 2]).drop(columns="x"), {}, "x", "column 'x' that the model uses"),
    (frame(0, [1, 2]), {"offset": "exposure"}, "exposure", "column 'exposure' that the model uses"),
    (frame(0, [1, 2]), {"weights": 3}, "weights", "has type int"),
    (frame(0, [1, 2], rows=3), {}, "patient", "2 of the site's 2 clusters"),
    (frame(0, [1, 2]), {"version": 0}, "version", "version 0 is not supported"),
    (frame(0, [1, 2]), {"salt": "xyz"}, "salt", "64 lower-case hex"),
    (frame(0, [1, 2]), {"formula": "y ~ x"}, "formula", "no random-effect term"),
    (frame(0, [1, 2]), {"family": "gamma"}, "family", "unknown family"),
    (frame(0, [1, 2]), {"formula": "y ~ x + (1|patient) + (1|ward)"}, "formula", "one grouping"),
])
def test_site_refuses_naming_the_field(data, request_change, field, words):
    answer = describe(Site(data, "north"), **request_change)
    assert answer["kind"] == "refusal" and answer["site"] == "north"
    assert answer["field"] == field and words in answer["reason"]


def test_minimum_cluster_size_is_the_sites_choice():
    data = frame(0, [1, 2], rows=3)
    assert describe(Site(data, "s", min_cluster_size=3))["kind"] == "description"
    refusal = describe(Site(data, "s", min_cluster_size=4))
    assert refusal["field"] == "patient" and "smallest: 3 rows" in refusal["reason"]


def test_minimum_cluster_size_counts_rows_of_positive_weight():
    """A cluster of 6 rows with 4 of weight 0 is a cluster of 2 rows; one whose rows
    all weigh 0 is dropped from the fit and sends nothing of them."""
    data = frame(0, [1, 2, 3], rows=6).assign(w=1.0)
    data.loc[data.patient == 3, "w"] = 0.0
    assert describe(Site(data, "s", min_cluster_size=5), weights="w")["kind"] == "description"
    data.loc[data.index[:4], "w"] = 0.0  # patient 1: 2 rows of positive weight
    refusal = describe(Site(data, "s", min_cluster_size=5), weights="w")
    assert refusal["field"] == "patient"
    assert "1 of the site's 3 clusters" in refusal["reason"]
    assert "smallest: 2 rows" in refusal["reason"]
    assert describe(Site(data, "s", min_cluster_size=2), weights="w")["kind"] == "description"


def test_site_refuses_requests_out_of_order_and_bad_k():
    site = Site(frame(0, [1, 2]), "north")
    early = schema.decode(site.handle(schema.encode(schema.message(
        "evaluate", round=1, deriv=2, params=schema.pack_array([0.0])))), schema.ANSWERS)
    assert early["field"] == "kind" and "before 'setup'" in early["reason"]
    coding = describe(site)["coding"]
    for nagq in (0, schema.MAX_NAGQ + 1):
        answer = schema.decode(site.handle(schema.encode(schema.message(
            "setup", coding=coding, nagq=nagq))), schema.ANSWERS)
        assert answer["kind"] == "refusal" and answer["field"] == "nagq"


# --- the coordinator's checks ---------------------------------------------------------


class Scripted:
    """A connection answering with given messages (dicts or raw bytes), in turn."""

    def __init__(self, name, answers):
        self.name, self.answers = name, list(answers)

    def send(self, data):
        pass

    def receive(self, timeout):
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer if isinstance(answer, bytes) else schema.encode(answer)

    def close(self):
        pass


COUNTS = {"rows": 20, "clusters": 2, "events": 7}


def evaluation(name, d=2, **change):
    msg = schema.message("evaluation", site=name, round=1, counts=COUNTS,
                         loglik=schema.pack_array(-3.5), grad=schema.pack_array(np.ones(d)),
                         hess=schema.pack_array(-np.eye(d)), deviance=schema.pack_array(10.0),
                         pearson=schema.pack_array(12.0))
    msg.update(change)
    return msg


def run_round(answer, site="west"):
    coord = Coordinator([Scripted("east", [evaluation("east")]), Scripted(site, [answer])])
    coord.nparams = 2
    coord.counts = {"east": COUNTS, site: COUNTS}
    return coord.evaluate(np.zeros(2), 2), coord.sums


def test_coordinator_sums_valid_answers():
    (loglik, grad, hess), sums = run_round(evaluation("west", loglik=schema.pack_array(-1.25)))
    assert loglik == -4.75 and grad.tolist() == [2, 2] and hess.tolist() == [[-2, 0], [0, -2]]
    assert sums == {"deviance": 20.0, "pearson": 24.0}


@pytest.mark.parametrize("answer, field, words", [
    (evaluation("west", hess=schema.pack_array(-np.eye(3))), "hess", r"shape \[3, 3\] but \[2, 2\]"),
    (evaluation("west", hess=schema.pack_array([[-1.0, 0.5], [0.0, -1.0]])), "hess", "not symmetric"),
    (evaluation("west", version=4), "version", "version 4 is not supported"),
    (evaluation("west", round=7), "round", "7 but round 1 was asked"),
    (evaluation("west", counts=dict(COUNTS, rows=21)), "counts", "differ from the counts"),
    (evaluation("west", site="elsewhere"), "site", "comes from site 'elsewhere'"),
    (evaluation("west", loglik=None), "loglik", "has type NoneType"),
    (schema.message("refusal", site="west", field="x", reason="no"), "x", "refused"),
    (b"\x80garbage", "(message)", "not a JSON object"),
])
def test_coordinator_rejects_a_bad_answer_naming_site_and_field(answer, field, words):
    with pytest.raises(FederatedError, match=words) as err:
        run_round(answer)
    assert err.value.site == "west" and err.value.field == field
    assert "'west'" in str(err.value)


@pytest.mark.parametrize("field, value", [("loglik", -np.inf), ("loglik", np.nan),
                                          ("grad", [1.0, np.inf]), ("hess", [[np.nan, 0], [0, -1]]),
                                          ("deviance", np.nan)])
def test_non_finite_values_reject_a_trial_point_and_are_refused_where_needed(field, value):
    """A site that cannot evaluate its likelihood at a point (a line-search trial at a
    huge variance) sends NaN or inf: as in the pooled fit, a value-only trial there is
    worse than any point (-inf if the log-likelihood is not finite); the fit refuses
    the point's derivatives and sums, naming the site and field."""
    coord = Coordinator([Scripted("east", [evaluation("east")]),
                         Scripted("west", [evaluation("west", **{field: schema.pack_array(value)})])])
    coord.nparams, coord.counts = 2, {"east": COUNTS, "west": COUNTS}
    rounds, x = _Rounds(coord), np.array([0.5, 800.0])
    loglik = rounds(x, 0)[0]
    assert loglik == (-np.inf if field == "loglik" else -7.0) and coord.rounds == 1
    with pytest.raises(FederatedError, match=f"site 'west': field '{field}': has NaN or infinite "
                       r"values at a point where the fit needs it .*\[0.5, 800.0\]") as err:
        rounds(x, 2)
    assert (err.value.site, err.value.field, coord.rounds) == ("west", field, 1)


def test_a_site_that_fails_ends_the_fit_naming_it():
    class Broken(Site):
        def handle(self, request):
            raise MemoryError("out of memory")

    coord = Coordinator([InProcess(Site(frame(0, [1, 2]), "east")),
                         InProcess(Broken(frame(1, [3, 4]), "west"))])
    with pytest.raises(FederatedError, match="site 'west' failed: MemoryError") as err:
        coord.describe(FORMULA, "binomial")
    assert err.value.site == "west"


def test_a_cluster_at_two_sites_is_refused_naming_both():
    coord = Coordinator(in_process({"east": frame(0, [1, 2, 3]), "west": frame(1, [3, 4])}))
    with pytest.raises(FederatedError, match="sites 'east' and 'west' both hold") as err:
        coord.describe(FORMULA, "binomial")
    assert err.value.field == "cluster_hashes" and "1 label(s) in common" in str(err.value)
    # distinct labels pass, whatever their dtype at each site
    ok = Coordinator(in_process({"east": frame(0, [1, 2, 3]), "west": frame(1, ["4", "5"])}))
    ok.describe(FORMULA, "binomial")


def test_merged_coding_is_the_pooled_coding():
    from pyglmm.data.coding import FixedCoding

    east, west = frame(0, [1, 2], wards=("b", "c")), frame(1, [3, 4], wards=("a", "c"))
    coord = Coordinator(in_process({"east": east, "west": west}))
    merged = coord.describe(FORMULA, "binomial")
    assert merged == FixedCoding.from_data("x + C(ward)", pd.concat([east, west])).to_dict()
    assert merged["names"] == ["Intercept", "x", "C(ward)[T.b]", "C(ward)[T.c]"]


def test_a_term_numeric_at_one_site_and_categorical_at_another_is_refused():
    east, west = frame(0, [1, 2]), frame(1, [3, 4])
    west["x"] = np.where(west["x"] > 0, "high", "low")
    coord = Coordinator(in_process({"east": east, "west": west}))
    with pytest.raises(FederatedError, match="'x' is categorical here and numeric") as err:
        coord.describe("y ~ x + (1|patient)", "binomial")
    assert err.value.site == "west" and err.value.field == "coding.terms[0]"
