"""Start-up cost: ``import pyglmm`` must not import the heavy libraries a code path may not need."""

import subprocess
import sys

HEAVY = ("scipy.stats", "formulaic", "pandas", "scipy", "numba", "dask", "distributed")


def imported_after(code):
    """The HEAVY modules loaded after running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(filter(None, run.stdout.strip().split(",")))


def test_import_pyglmm_loads_none_of_the_heavy_libraries():
    assert imported_after("import pyglmm") == set()


def test_lazy_public_names_resolve_and_list():
    code = "import pyglmm\nassert {'glmm', 'load', 'GLMMResult'} <= set(dir(pyglmm))\npyglmm.load"
    assert "formulaic" not in imported_after(code)
