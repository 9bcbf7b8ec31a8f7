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
for) and ``json-out`` (where the ServerApp writes the fit's strict JSON,
:meth:`~pyglmm.GLMMResult.to_json`: a non-finite number is ``null``).  A node's
reply that is not a ``message`` of bytes is refused naming the site and field.
:func:`pyglmm.engines.federated.flower_local.run_local` starts a SuperLink and
one SuperNode per file on this machine and runs the fit (tests, benchmarks).
"""

import time

from . import schema
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
        if self.node_id not in self.pending["in"]:
            raise FederatedError(f"site {self.name!r} (Flower node {self.node_id}) did not answer "
                                 f"within {timeout:g} s", site=self.name)
        return _answer(self.pending["in"].pop(self.node_id), self.name, self.node_id)

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
            pending["in"][node] = FlowerFailure(f"{reply.error.reason} (code {reply.error.code})")
        else:
            record = reply.content.config_records.get(CONFIG)
            pending["in"][node] = None if record is None else record.get("message")


class FlowerFailure(str):
    """The error a Flower node replied with instead of a message."""


def _answer(reply, site, node):
    """The bytes of a node's filed reply; :class:`FederatedError` naming the site (the
    node's ``site-name`` or number) and the field if it failed or is malformed."""
    if isinstance(reply, FlowerFailure):
        raise FederatedError(f"site {site!r} (Flower node {node}) failed: {reply}", site=site)
    if not isinstance(reply, bytes):
        schema.fail(site, "message", f"the Flower reply (node {node}) must carry bytes in entry "
                    f"'message' of record {CONFIG!r}, got {type(reply).__name__}")
    return reply


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
    missing = [n for n in nodes if n not in pending["in"]]
    if missing:
        raise FederatedError(f"Flower node(s) {missing} did not say their site name within "
                             f"{timeout:g} s")
    names = {n: _site_name(pending["in"].pop(n), n) for n in nodes}
    return [FlowerConnection(grid, n, names[n], pending) for n in nodes]


def _site_name(reply, node):
    """The site name a node sent in answer to :data:`HELLO`."""
    raw = _answer(reply, f"node {node}", node)
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        name = ""
    if not name.strip():
        schema.fail(f"node {node}", "site-name", f"must be non-empty UTF-8 text, got {raw[:40]!r}")
    return name


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
            res.to_json(str(cfg["json-out"]))  # strict JSON: a non-finite number is null

    return app


client_app = _client_app()
server_app = _server_app()
