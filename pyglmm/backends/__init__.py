"""Kernel backend registry: ``cpp`` > ``numba`` > ``numpy``.

The active backend is the first available one unless ``PYGLMM_BACKEND`` names
one; a named backend that cannot be loaded is an error, never a silent
fallback.  Each engine has one kernel module per backend, with the same
functions and signatures: ``pyglmm._core.<engine>`` (C++, documented in
``csrc/<engine>/kernels.hpp``), ``pyglmm.engines.<engine>.kernels_numba`` and
``pyglmm.engines.<engine>.kernels_numpy`` (the reference).  Adding an engine
adds its name to ``ENGINES``.

Threads: ``PYGLMM_NUM_THREADS`` or :func:`set_num_threads` (default: all
cores).  Results are identical for a given thread count.  While the cpp or
numba kernels run, BLAS is held to one thread (:func:`blas_single_thread`).
"""

import contextlib
import importlib
import numbers
import os

BACKENDS = ("cpp", "numba", "numpy")
ENGINES = ("crossed", "agq", "ridge")
_MODULES = {"cpp": "pyglmm._core", "numba": "pyglmm.engines.{engine}.kernels_numba",
            "numpy": "pyglmm.engines.{engine}.kernels_numpy"}

_loaded = {}
_num_threads = None


class BackendUnavailableError(RuntimeError):
    """A backend that was asked for by name cannot be loaded."""


class _NoEngineKernels(ImportError):
    """The backend loads but has no kernels for the engine (a C++ build without them)."""


def _load(name, engine="crossed"):
    """The kernel module of backend ``name`` for ``engine``, or the ImportError."""
    if name not in _MODULES:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    key = (name, engine)
    if key not in _loaded:
        path = _MODULES[name].format(engine=engine)
        try:
            mod = importlib.import_module(path)
            if name == "cpp" and not hasattr(mod, engine):  # built before the engine had C++ kernels
                raise _NoEngineKernels(f"pyglmm._core has no submodule {engine!r}")
            _loaded[key] = getattr(mod, engine) if name == "cpp" else mod
        except ModuleNotFoundError as exc:  # the engine has no such kernel module (yet)
            _loaded[key] = _NoEngineKernels(str(exc)) if exc.name == path else exc
        except ImportError as exc:
            _loaded[key] = exc
    return _loaded[key]


def available_backends(engine="crossed"):
    """Names of the backends that load on this machine for ``engine``, fastest first."""
    return [name for name in BACKENDS if not isinstance(_load(name, engine), ImportError)]


def _resolve(name=None, engine="crossed"):
    name = name or os.environ.get("PYGLMM_BACKEND") or None
    if name is None:  # the first that loads (numpy always does); later ones are not imported
        return next(b for b in BACKENDS if not isinstance(_load(b, engine), ImportError))
    mod = _load(name, engine)
    if isinstance(mod, ImportError):
        hint = {"cpp": "the C++ extension was not built (reinstall with a C++17 compiler; "
                       "PYGLMM_REQUIRE_CPP=1 makes a failed build an error)",
                "numba": "install numba (pip install 'pyglmm[numba]')"}.get(name, "")
        if isinstance(mod, _NoEngineKernels):
            hint = f"it has no kernels for the {engine} engine yet"
        raise BackendUnavailableError(f"backend {name!r} is not available: {hint} ({mod})")
    return name


def backend(name=None, engine="crossed"):
    """Name of the backend that fits of ``engine`` use: ``name`` if given, else the
    active one (the first of cpp > numba > numpy that has kernels for ``engine``).

    Raises
    ------
    BackendUnavailableError
        If the backend asked for (by ``name`` or ``PYGLMM_BACKEND``) cannot be loaded.
    """
    return _resolve(name, engine)


def kernels(name=None, engine="crossed"):
    """The kernel module of :func:`backend` for ``engine``."""
    return _load(_resolve(name, engine), engine)


def get_num_threads():
    """Threads the kernels use (``PYGLMM_NUM_THREADS``, else all cores)."""
    if _num_threads is not None:
        return _num_threads
    env = os.environ.get("PYGLMM_NUM_THREADS")
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"PYGLMM_NUM_THREADS must be a positive integer, got {env!r}")
        return int(env)
    return os.cpu_count() or 1


def set_num_threads(n):
    """Set the kernels' thread count (``None`` restores the default)."""
    global _num_threads
    if n is not None and not (isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1):
        raise ValueError(f"number of threads must be a positive integer, got {n!r}")
    _num_threads = None if n is None else int(n)


_blas = None


def blas_single_thread(name):
    """Context in which BLAS uses one thread, unless ``name`` is the numpy backend.

    The cpp and numba kernels use every core themselves, and BLAS only sees
    p x p and Q x p algebra between them; an idle OpenBLAS thread spin-waits
    on a core for a while after each call, competing with the kernels (15 %
    of a fit at 10^6 rows on 2 cores).  The numpy backend's kernels are BLAS
    calls, so it keeps BLAS's threads.
    """
    global _blas
    if name == "numpy":
        return contextlib.nullcontext()
    if _blas is None:
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")
