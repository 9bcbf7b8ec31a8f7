"""Run the Flower transport on this machine: a real SuperLink, one SuperNode per site
file, and ``flwr run`` of the pyglmm Flower App (tests, benchmarks, trying it out).

Everything is insecure (no TLS) and bound to 127.0.0.1; the README shows the
production set-up (TLS certificates, SuperNode authentication).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .schema import FederatedError

APP_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "pyglmm-federated"
version = "1.0.0"
description = "Exact federated GLMM (pyglmm): sites send log-likelihood, gradient, Hessian sums"
license = "MIT"
dependencies = ["pyglmm[flower]"]

[tool.flwr.app]
publisher = "pyglmm"

[tool.flwr.app.components]
serverapp = "pyglmm.engines.federated.flower:server_app"
clientapp = "pyglmm.engines.federated.flower:client_app"

[tool.flwr.app.config]
formula = "y ~ x + (1|g)"
family = "binomial"
nagq = 1
timeout = 120.0
json-out = ""
"""


def write_app(directory):
    """Write the pyglmm Flower App (its ``pyproject.toml``) into ``directory``."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    (Path(directory) / "pyproject.toml").write_text(APP_PYPROJECT)
    return Path(directory)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toml(value):
    return json.dumps(value) if isinstance(value, str) else repr(value)


def run_local(sites, formula, family="binomial", nagq=1, timeout=120.0, wait=600.0, log=None):
    """Fit on a local Flower deployment; the fit's JSON (a dict).

    Parameters
    ----------
    sites : dict
        Site name -> path of its CSV or Parquet file (each SuperNode reads only its own).
    formula, family, nagq, timeout
        As :func:`pyglmm.engines.federated.fit_federated` (``timeout``: per round).
    wait : float
        Seconds to wait for the whole run.
    log : file, optional
        Where the Flower processes' output goes (default: discarded).
    """
    work = Path(tempfile.mkdtemp(prefix="pyglmm-flower-"))
    env = dict(os.environ, FLWR_HOME=str(work / "flwr-home"), FLWR_DISABLE_UPDATE_CHECK="1",
               PYTHONPATH=os.pathsep.join(p for p in [str(Path(__file__).parents[3]),
                                                       os.environ.get("PYTHONPATH", "")] if p))
    fleet, control, http = _free_port(), _free_port(), _free_port()
    bindir = Path(sys.executable).parent
    out = log if log is not None else subprocess.DEVNULL
    procs = []
    try:
        procs.append(subprocess.Popen(
            [str(bindir / "flower-superlink"), "--insecure", "--isolation", "subprocess",
             "--fleet-api-address", f"127.0.0.1:{fleet}", "--control-api-address",
             f"127.0.0.1:{control}", "--host", "127.0.0.1", "--port", str(http),
             "--database", ":flwr-in-memory:"], env=env, stdout=out, stderr=out))
        for name, path in sites.items():
            procs.append(subprocess.Popen(
                [str(bindir / "flower-supernode"), "--insecure", "--superlink",
                 f"127.0.0.1:{fleet}", "--port", str(_free_port()), "--node-config",
                 f"site-name={_toml(name)} data-path={_toml(str(Path(path).resolve()))}"],
                env=env, stdout=out, stderr=out))
        (work / "flwr-home").mkdir()
        (work / "flwr-home" / "config.toml").write_text(
            f'[superlink]\ndefault = "local"\n\n[superlink.local]\n'
            f'address = "127.0.0.1:{control}"\ninsecure = true\n')
        app = write_app(work / "app")
        result = work / "fit.json"
        run_config = (f"formula={_toml(formula)} family={_toml(family)} nagq={int(nagq)} "
                      f"timeout={float(timeout)!r} json-out={_toml(str(result))}")
        _wait_for_nodes(env, bindir, len(sites), deadline=time.monotonic() + 60)
        subprocess.run([str(bindir / "flwr"), "run", str(app), "local", "--run-config", run_config],
                       env=env, stdout=out, stderr=out, check=True, timeout=60)
        deadline = time.monotonic() + wait
        while not result.exists() or not result.stat().st_size:
            if time.monotonic() > deadline:
                raise FederatedError(f"the Flower run wrote no result within {wait:g} s (see "
                                     f"the SuperLink's log)")
            time.sleep(0.2)
        time.sleep(0.1)
        return json.loads(result.read_text())
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def _wait_for_nodes(env, bindir, count, deadline):
    """Wait until ``count`` SuperNodes are registered (``flwr supernode list``)."""
    while time.monotonic() < deadline:
        done = subprocess.run([str(bindir / "flwr"), "supernode", "list", "local", "--format", "json"],
                              env=env, capture_output=True, text=True)
        try:
            nodes = json.loads(done.stdout).get("nodes", [])
            if sum(1 for n in nodes if str(n.get("status", "")).lower() == "online") >= count:
                return
        except (ValueError, AttributeError):
            pass
        time.sleep(0.5)
    raise FederatedError(f"fewer than {count} Flower SuperNodes came online within 60 s")
