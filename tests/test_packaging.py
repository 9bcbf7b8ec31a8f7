"""setup.py: the C++ extension is optional unless PYGLMM_REQUIRE_CPP=1 (builds take ~20 s)."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def broken_source_tree(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for item in ["setup.py", "pyproject.toml", "README.md", "csrc", "pyglmm"]:
        if (ROOT / item).is_dir():
            shutil.copytree(ROOT / item, src / item, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
        else:
            shutil.copy(ROOT / item, src / item)
    with open(src / "csrc" / "crossed" / "scoring.cpp", "a") as fh:
        fh.write("\nthis is not C++;\n")
    return src


def build_wheel(src, out, require):
    env = {**os.environ, "PYGLMM_REQUIRE_CPP": "1" if require else "0"}
    return subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(src)],
                          capture_output=True, text=True, env=env)


@pytest.mark.skipif(not (ROOT / "setup.py").exists(), reason="needs the source tree")
def test_required_cpp_fails_loudly_and_optional_cpp_falls_back(tmp_path):
    src = broken_source_tree(tmp_path)
    strict = build_wheel(src, tmp_path / "strict", require=True)
    assert strict.returncode != 0
    # the compiler's own error, naming the broken file, not some other failure of pip
    assert "crossed/scoring.cpp" in strict.stdout + strict.stderr
    assert "this is not C++" in strict.stdout + strict.stderr
    lenient = build_wheel(src, tmp_path / "lenient", require=False)
    assert lenient.returncode == 0, lenient.stderr[-2000:]
    wheel = next((tmp_path / "lenient").glob("pyglmm-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "pyglmm/engines/crossed/kernels_numpy.py" in names
    assert not any(n.startswith("pyglmm/_core") for n in names)
