"""End to end on Flower's deployment runtime: a real SuperLink and one SuperNode per
site on localhost (``flower-superlink``, ``flower-supernode``), the pyglmm Flower
App started with ``flwr run``; the fit equals the in-process one."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("flwr")

from pyglmm import DataError, SeparationWarning  # noqa: E402
from pyglmm.engines.federated import flower  # noqa: E402
from pyglmm.engines.federated.api import fit_federated  # noqa: E402
from pyglmm.engines.federated.flower_local import run_local  # noqa: E402
from pyglmm.engines.federated.schema import FederatedError  # noqa: E402
from pyglmm.engines.federated.site import Site  # noqa: E402
from pyglmm.engines.federated.transports import in_process  # noqa: E402
from pyglmm.results.io import read_json  # noqa: E402

from test_fed_exact import hospital_files, hospitals  # noqa: E402,I001
from test_fed_separation import CASES, sites  # noqa: E402,I001


def test_flower_deployment_gives_the_in_process_fit(tmp_path):
    df = hospitals()
    df["w"] = np.random.default_rng(1).integers(1, 4, len(df)).astype(float)  # the run config's columns
    paths = hospital_files(tmp_path, df)
    formula = "y ~ x + t + C(shift) + (1|ward)"
    with open(tmp_path / "flower.log", "w") as log:
        d = run_local(paths, formula, nagq=2, timeout=300, wait=900, log=log, weights="w")
    inproc = fit_federated(in_process({f"hospital{h}": g for h, g in df.groupby("hospital")}),
                           formula, nagq=2, weights="w")
    assert d["transport"] == "flower" and d["converged"]
    np.testing.assert_allclose(list(d["coef"].values()), inproc.coef, rtol=1e-12)
    np.testing.assert_allclose(list(d["se"].values()), inproc.se, rtol=1e-12)
    assert d["loglik"] == pytest.approx(inproc.loglik, rel=1e-14)
    assert d["rounds"] == inproc.rounds and set(d["bytes_per_site"]) == set(paths)


# --- the ServerApp and the coordinator's side of the transport, on a stand-in grid ---------


class Reply:
    """What the coordinator reads of a Flower reply (a stand-in for flwr's Message)."""

    def __init__(self, node, message=None, record=True, error=None):
        self.metadata = SimpleNamespace(src_node_id=node)
        self.error = error
        records = {flower.CONFIG: {} if message is None else {"message": message}} if record else {}
        self.content = SimpleNamespace(config_records=records)

    def has_error(self):
        return self.error is not None


class Grid:
    """Flower nodes 1, 2, ... answering through in-process sites; ``answer(node, request)``
    may replace a node's reply."""

    def __init__(self, sites, answer=None):
        self.sites = dict(enumerate(sites.items(), start=1))
        self.answer = answer

    def get_node_ids(self):
        return list(self.sites)

    def send_and_receive(self, messages, timeout):
        replies = []
        for msg in messages:
            node, request = msg.dst_node_id, msg.content[flower.CONFIG]["message"]
            name, site = self.sites[node]
            reply = None if self.answer is None else self.answer(node, request)
            replies.append(reply or Reply(node, name.encode() if request == flower.HELLO
                                          else site.handle(request)))
        return replies


@pytest.fixture
def stand_in_messages(monkeypatch):
    """flwr's Message needs a run's identity; the stand-in grid reads two fields."""
    import flwr.app

    monkeypatch.setattr(flwr.app, "Message", lambda content, node, kind, group_id: SimpleNamespace(
        content=content, dst_node_id=node))


def test_the_server_app_writes_strict_json(tmp_path, stand_in_messages):
    """A separated fit's NaN standard error is null in the ServerApp's JSON (it wrote a
    bare NaN token, which strict JSON parsers refuse), and run_local's reader reads it."""
    formula, make, family, nagq = CASES["cluster covariate"]
    df = make()
    out = tmp_path / "fit.json"
    context = SimpleNamespace(run_config={"formula": formula, "family": family, "nagq": nagq,
                                          "timeout": 60.0, "sites": 3, "json-out": str(out)})
    with pytest.warns(SeparationWarning):
        flower.server_app._main(Grid({n: Site(g, n) for n, g in sites(df).items()}), context)
    text = out.read_text()
    d = json.loads(text, parse_constant=lambda token: pytest.fail(f"{token} in the JSON"))
    separated = d["separation"]
    assert len(separated) == 1 and d["se"][separated[0]] is None
    assert all(np.isfinite(v) for k, v in d["se"].items() if k != separated[0])
    assert read_json(out, "a fit", strict=True) == d
    out.write_text(text.replace('"se": {', '"se": {"extra": NaN, ', 1))
    with pytest.raises(DataError, match=r"fit.json: not a fit \(field 'se.extra' is nan: strict JSON"):
        read_json(out, "a fit", strict=True)


@pytest.mark.parametrize("answer, site, field, words", [
    (lambda node, request: Reply(node, record=False) if node == 2 and request != flower.HELLO
     else None, "b", "message", "must carry bytes in entry 'message' of record 'pyglmm', got NoneType"),
    (lambda node, request: Reply(node, "text") if node == 2 and request != flower.HELLO else None,
     "b", "message", "got str"),
    (lambda node, request: Reply(node, b"\xff\xfe") if node == 1 else None,
     "node 1", "site-name", "must be non-empty UTF-8 text"),
    (lambda node, request: Reply(node, error=SimpleNamespace(reason="boom", code=7))
     if node == 2 and request != flower.HELLO else None, "b", None, r"failed: boom \(code 7\)"),
])
def test_a_malformed_flower_reply_is_refused_naming_site_and_field(stand_in_messages, answer, site,
                                                                   field, words):
    df = hospitals()
    grid = Grid({name: Site(g, name) for name, (_, g) in zip("ab", df.groupby("hospital"))}, answer)
    with pytest.raises(FederatedError, match=words) as err:
        fit_federated(flower.connect(grid, 5.0), "y ~ x + t + C(shift) + (1|ward)")
    assert (err.value.site, err.value.field) == (site, field)
