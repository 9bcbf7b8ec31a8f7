"""The federated fit on Flower's deployment runtime (``pip install pyglmm[flower]``).

:data:`server_app` (a Flower ``ServerApp``) is the coordinator and
:data:`client_app` (a ``ClientApp``) the site.  They talk through Flower's
Message API: every request and answer of :mod:`~pyglmm.engines.federated.schema`
travels, bytes unchanged, as the ``"message"`` entry of a ``ConfigRecord`` named
``"pyglmm"`` in a ``query`` message (no model weights, no averaging: the
coordinator sums the sites' log-likelihood, gradient and Hessian exactly as over
the other transports).

Each SuperNode is a site; its node config names it and its file::

    flower-supernode --superlink LINK:8000 \\
        --node-config 'site-name="north" data-path="/data/north.csv" min-cluster-size=5'

The run config (``flwr run ... --run-config``) gives ``formula``, ``family``,
``nagq``, ``weights``, ``trials``, ``offset`` (column names; empty: none),
``timeout`` (seconds per round), ``sites`` (how many SuperNodes to wait
for) and ``json-out`` (where the ServerApp writes the fit's JSON).
:func:`pyglmm.engines.federated.flower_local.run_local` starts a SuperLink and
one SuperNode per file on this machine and runs the fit (tests, benchmarks).
"""

import json
import time

from .model import ROLES
from .schema import FederatedError

CONFIG = "pyglmm"  # the ConfigRecord that carries a schema message
HELLO = b"hello"  # the ServerApp's first query: each node answers with its site name


def _client_app():
    from flwr.app import ConfigRecord, Message, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.query()
    def query(msg, context):
        request = msg.content[CONFIG]["message"]
        config = context.node_config
        name = str(config["site-name"])
        if request == HELLO:
            answer = name.encode("utf-8")
        else:
            answer = _site(config, context.state).handle(request)
        return Message(RecordDict({CONFIG: ConfigRecord({"message": answer})}), reply_to=msg)

    return app


_SITES = {}  # the Site of each data path while this ClientApp process lives


def _site(config, state):
    """This node's Site; a new ClientApp process rebuilds it by replaying the run's
    ``describe`` and ``setup`` requests, kept in the node's Flower state."""
    from ...data.readers import read_table
    from . import schema
    from .site import DEFAULT_MIN_CLUSTER_SIZE, Site

    key = str(config["data-path"])
    if key not in _SITES:
        _SITES[key] = Site(read_table(key), str(config["site-name"]),
                           int(config.get("min-cluster-size", DEFAULT_MIN_CLUSTER_SIZE)))
        for kind in ("describe", "setup"):
            if CONFIG in state.config_records and kind in state.config_records[CONFIG]:
                _SITES[key].handle(state.config_records[CONFIG][kind])
    return _Recording(_SITES[key], state, schema)


class _Recording:
    """A Site whose ``describe`` and ``setup`` requests are kept in the node's state."""

    def __init__(self, site, state, schema):
        self.site, self.state, self.schema = site, state, schema

    def handle(self, request):
        from flwr.app import ConfigRecord

        answer = self.site.handle(request)
        try:
            kind = self.schema.decode(request, ("describe", "setup"))["kind"]
        except FederatedError:
            return answer
        if CONFIG not in self.state.config_records:
            self.state.config_records[CONFIG] = ConfigRecord()
        self.state.config_records[CONFIG][kind] = request
        return answer


class FlowerConnection:
    """A site behind a Flower SuperNode; the connections of one grid send their
    requests together (:meth:`Grid.send_and_receive`) when the first answer is
    asked for."""

    def __init__(self, grid, node_id, name, pending):
        self.grid, self.node_id, self.name, self.pending = grid, node_id, name, pending

    def send(self, data):
        self.pending["out"][self.node_id] = data

    def receive(self, timeout):
        if self.node_id not in self.pending["in"]:
            _exchange(self.grid, self.pending, timeout)
        reply = self.pending["in"].pop(self.node_id, None)
        if reply is None:
            raise FederatedError(f"site {self.name!r} (Flower node {self.node_id}) did not answer "
                                 f"within {timeout:g} s", site=self.name)
        if isinstance(reply, str):
            raise FederatedError(f"site {self.name!r} (Flower node {self.node_id}) failed: {reply}",
                                 site=self.name)
        return reply

    def close(self):
        self.pending["out"].pop(self.node_id, None)


def _exchange(grid, pending, timeout):
    """Send every pending request in one Flower round; file the replies by node."""
    from flwr.app import ConfigRecord, Message, RecordDict

    out, pending["out"] = pending["out"], {}
    pending["round"] = pending.get("round", 0) + 1
    messages = [Message(RecordDict({CONFIG: ConfigRecord({"message": data})}), node, "query",
                        group_id=str(pending["round"])) for node, data in out.items()]
    for reply in grid.send_and_receive(messages, timeout=timeout):
        node = reply.metadata.src_node_id
        if reply.has_error():
            pending["in"][node] = f"{reply.error.reason} (code {reply.error.code})"
        else:
            pending["in"][node] = reply.content[CONFIG]["message"]


def connect(grid, timeout, sites=0):
    """One :class:`FlowerConnection` per SuperNode on ``grid``, named by the node's
    ``site-name`` (asked in a first round), once ``sites`` nodes (0: at least one)
    are connected; :class:`FederatedError` if they are not within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while len(nodes := sorted(grid.get_node_ids())) < max(sites, 1):
        if time.monotonic() > deadline:
            raise FederatedError(f"{len(nodes)} Flower SuperNode(s) connected to the SuperLink "
                                 f"within {timeout:g} s, {max(sites, 1)} expected")
        time.sleep(0.5)
    pending = {"out": dict.fromkeys(nodes, HELLO), "in": {}}
    _exchange(grid, pending, timeout)
    missing = [n for n in nodes if not isinstance(pending["in"].get(n), bytes)]
    if missing:
        raise FederatedError(f"Flower node(s) {missing} did not say their site name within "
                             f"{timeout:g} s: {[pending['in'].get(n) for n in missing]}")
    names = {n: pending["in"].pop(n).decode("utf-8") for n in nodes}
    return [FlowerConnection(grid, n, names[n], pending) for n in nodes]


def _server_app():
    from flwr.serverapp import ServerApp

    app = ServerApp()

    @app.main()
    def main(grid, context):
        from .api import fit_federated

        cfg = context.run_config
        timeout = float(cfg.get("timeout", 120.0))
        columns = {role: str(cfg[role]) or None for role in ROLES if role in cfg}
        res = fit_federated(connect(grid, timeout, int(cfg.get("sites", 0))), str(cfg["formula"]),
                            family=str(cfg.get("family", "binomial")), nagq=int(cfg.get("nagq", 1)),
                            timeout=timeout, transport="flower", **columns)
        if cfg.get("json-out"):
            with open(str(cfg["json-out"]), "w") as fh:
                json.dump(res.to_dict(), fh, indent=1)

    return app


client_app = _client_app()
server_app = _server_app()
