"""Connections between the coordinator and its sites: in-process and local processes.

A connection has ``name``, ``send(bytes)``, ``receive(timeout) -> bytes`` and
``close()``; ``receive`` raises :class:`FederatedError` naming the site when the
site fails, ends or does not answer in time.  The bytes are the schema's
messages (:mod:`pyglmm.engines.federated.schema`); nothing is pickled.
"""

import multiprocessing

from .schema import FederatedError
from .site import DEFAULT_MIN_CLUSTER_SIZE, Site, is_close, serve


class InProcess:
    """A :class:`Site` in this process (simulations and tests)."""

    def __init__(self, site):
        self.site, self.name = site, site.name
        self._answer = None

    def send(self, data):
        if is_close(data):
            return
        try:
            self._answer = self.site.handle(data)
        except Exception as exc:  # noqa: BLE001 - any failure of the site ends the fit, named
            self._answer = exc

    def receive(self, timeout):
        answer, self._answer = self._answer, None
        if isinstance(answer, Exception):
            raise FederatedError(f"site {self.name!r} failed: {type(answer).__name__}: {answer}",
                                 site=self.name) from answer
        if answer is None:
            raise FederatedError(f"site {self.name!r} sent no answer", site=self.name)
        return answer

    def close(self):
        self._answer = None


def in_process(frames, min_cluster_size=DEFAULT_MIN_CLUSTER_SIZE, hash_key=b""):
    """In-process connections to sites holding ``frames`` (a dict: name -> DataFrame)."""
    return [InProcess(Site(frame, name, min_cluster_size, hash_key)) for name, frame in frames.items()]


class LocalProcess:
    """A site in its own process (started with ``spawn``: it inherits nothing from
    the coordinator but the path of its file), talking over a pipe in raw bytes.

    Parameters
    ----------
    path : str
        The site's CSV or Parquet file; only the site process reads it.
    name : str
    min_cluster_size : int
    hash_key : bytes
    """

    def __init__(self, path, name, min_cluster_size=DEFAULT_MIN_CLUSTER_SIZE, hash_key=b""):
        self.name = name
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe(duplex=True)
        self._proc = ctx.Process(target=site_process, name=f"pyglmm-site-{name}", daemon=True,
                                 args=(child, str(path), name, min_cluster_size, bytes(hash_key)))
        self._proc.start()
        child.close()

    def send(self, data):
        try:
            self._conn.send_bytes(data)
        except (OSError, ValueError) as exc:
            raise FederatedError(f"site {self.name!r} is not reachable: {self._state()} ({exc})",
                                 site=self.name) from None

    def receive(self, timeout):
        try:
            if not self._conn.poll(timeout):
                raise FederatedError(f"site {self.name!r} did not answer within {timeout:g} s",
                                     site=self.name)
            return self._conn.recv_bytes()
        except (EOFError, OSError) as exc:
            raise FederatedError(f"site {self.name!r} dropped out: {self._state()} "
                                 f"({type(exc).__name__})", site=self.name) from None

    def _state(self):
        self._proc.join(0.5)
        code = self._proc.exitcode
        return "its process is still running" if code is None else f"its process ended with code {code}"

    def close(self):
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)
        self._conn.close()


def site_process(conn, path, name, min_cluster_size, hash_key):
    """The body of a site process: read the file, then serve requests on ``conn``."""
    from ...data.readers import read_table
    from .schema import encode, message

    try:
        site = Site(read_table(path), name, min_cluster_size, hash_key)
    except Exception as exc:  # noqa: BLE001 - reported to the coordinator in the refusal
        site = _Broken(name, encode(message("refusal", site=name, field="data",
                                            reason=f"cannot read {path!r}: {exc}")))

    def receive():
        try:
            return conn.recv_bytes()
        except (EOFError, OSError):
            return None

    serve(site, receive, conn.send_bytes)
    conn.close()


class _Broken:
    """A site whose file could not be read: refuses every request, saying why."""

    def __init__(self, name, refusal):
        self.name, self._refusal = name, refusal

    def handle(self, request):
        return self._refusal
