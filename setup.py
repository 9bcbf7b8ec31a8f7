"""Build script: the optional C++ extension ``pyglmm._core``.

The extension is optional so that a machine without a compiler still installs
pyglmm (it then runs on the numba or numpy backend).  ``PYGLMM_REQUIRE_CPP=1``
makes a failed compile fail the build instead.
"""

import os
import sys
from glob import glob

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

REQUIRE_CPP = os.environ.get("PYGLMM_REQUIRE_CPP") == "1"
UNIX = sys.platform != "win32"

ext = Pybind11Extension(
    "pyglmm._core",
    sorted(glob("csrc/**/*.cpp", recursive=True)),  # sorted: reproducible builds
    depends=sorted(glob("csrc/**/*.hpp", recursive=True)),
    include_dirs=["csrc"],
    cxx_std=17,
    extra_compile_args=["-O3", "-pthread"] if UNIX else ["/O2"],
    extra_link_args=["-pthread"] if UNIX else [],
    optional=not REQUIRE_CPP,
)

setup(ext_modules=[ext], cmdclass={"build_ext": build_ext})
