"""Run the Flower transport on this machine: a real SuperLink, one SuperNode per site
file, and ``flwr run`` of the pyglmm Flower App (tests, benchmarks, trying it out).

Everything is insecure (no TLS) and bound to 127.0.0.1; the README shows the
production set-up (TLS certificates, SuperNode authentication).
"""

import contextlib
import json
import os
import signal
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ...results.io import read_json
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
# pyglmm[flower] must be installed where the SuperLink and SuperNodes run: the app
# installs nothing at run time (--disable-runtime-dependency-installation)
dependencies = []

[tool.flwr.app]
publisher = "pyglmm"

[tool.flwr.app.components]
serverapp = "pyglmm.engines.federated.flower:server_app"
clientapp = "pyglmm.engines.federated.flower:client_app"

[tool.flwr.app.config]
formula = "y ~ x + (1|g)"
family = "binomial"
nagq = 1
weights = ""
trials = ""
offset = ""
timeout = 120.0
sites = 0
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


def run_local(sites, formula, family="binomial", nagq=1, timeout=120.0, wait=600.0, log=None,
              **columns):
    """Fit on a local Flower deployment; the fit's JSON (a dict), read strictly
    (:func:`~pyglmm.results.io.read_json`: a ``NaN`` or ``Infinity`` token is refused,
    naming its field).

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
    **columns
        ``weights``, ``trials``, ``offset``: column names, as for ``fit_federated``.
    """
    work = Path(tempfile.mkdtemp(prefix="pyglmm-flower-"))
    env = dict(os.environ, FLWR_HOME=str(work / "flwr-home"), FLWR_DISABLE_UPDATE_CHECK="1",
               PYTHONPATH=os.pathsep.join(p for p in [str(Path(__file__).parents[3]),
                                                       os.environ.get("PYTHONPATH", "")] if p))
    port = _free_port()  # the SuperLink serves its Fleet, Control and Runtime APIs on one HTTP port
    bindir = Path(sys.executable).parent
    out = log if log is not None else subprocess.DEVNULL
    procs = []
    try:
        procs.append(subprocess.Popen(
            [str(bindir / "flower-superlink"), "--insecure", "--isolation", "subprocess",
             "--disable-runtime-dependency-installation", "--host", "127.0.0.1", "--port", str(port),
             "--database", ":flwr-in-memory:"],
            env=env, stdout=out, stderr=out, start_new_session=True))
        for name, path in sites.items():
            procs.append(subprocess.Popen(
                [str(bindir / "flower-supernode"), "--insecure", "--superlink",
                 f"127.0.0.1:{port}", "--port", str(_free_port()), "--node-config",
                 f"site-name={_toml(name)} data-path={_toml(str(Path(path).resolve()))}"],
                env=env, stdout=out, stderr=out, start_new_session=True))
        _wait_for_health(port, procs[0], deadline=time.monotonic() + 60)
        (work / "flwr-home").mkdir(exist_ok=True)
        (work / "flwr-home" / "config.toml").write_text(
            f'[superlink]\ndefault = "local"\n\n[superlink.local]\n'
            f'address = "127.0.0.1:{port}"\ninsecure = true\n')
        app = write_app(work / "app")
        result = work / "fit.json"
        run_config = (f"formula={_toml(formula)} family={_toml(family)} nagq={int(nagq)} "
                      f"timeout={float(timeout)!r} sites={len(sites)} json-out={_toml(str(result))}"
                      + "".join(f" {k}={_toml(v)}" for k, v in columns.items() if v))
        # --stream: wait for the run to end, with the ServerApp's log on ``log``
        subprocess.run([str(bindir / "flwr"), "run", str(app), "local", "--stream", "--run-config",
                        run_config], env=env, stdout=out, stderr=out, check=True, timeout=wait)
        if not result.exists():
            raise FederatedError("the Flower run ended without a result (see its log)")
        return read_json(result, "the Flower run's fit (strict JSON)", strict=True)
    finally:
        _stop(procs)
        shutil.rmtree(work, ignore_errors=True)


def _stop(procs):
    """End the processes this run started with everything they started (each has its
    own process group: the SuperExec, ServerApp and ClientApp processes)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        deadline = time.monotonic() + 10
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(deadline - time.monotonic(), 0.1))
        if sig == signal.SIGTERM:
            time.sleep(1)  # the group's children exit after their parent


def _wait_for_health(port, proc, deadline):
    """Wait until the SuperLink answers on its ``/health`` endpoint."""
    import urllib.request

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FederatedError(f"the Flower SuperLink exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise FederatedError("the Flower SuperLink did not come up within 60 s")
