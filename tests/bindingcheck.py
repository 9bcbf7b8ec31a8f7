"""What the tests of the C++ bindings' argument checks share (``tests/engines/*/test_b*.py``).

A case is ``(name, regex, mutation)``: the mutation edits a dict of valid arguments
in place; the regex is what the ValueError's message must match (None: the call must
succeed).  All of a binding's cases run in one subprocess, so that a crash fails the
test instead of killing pytest; the child prints one JSON verdict per case.  This
module imports only numpy: the children load the extension, not the pyglmm package.
"""

import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

TESTS = os.path.dirname(os.path.abspath(__file__))
WRONG_DTYPE = {np.dtype(np.float64): np.float32, np.dtype(np.int32): np.int64,
               np.dtype(np.int64): np.int32}


def set_(name, fn):
    """The mutation that replaces argument ``name`` by ``fn(argument)``."""
    def mutate(args):
        args[name] = fn(args[name])
    return mutate


def put(name, value):
    return set_(name, lambda _: value)


def entry(name, index, value):
    """The mutation that sets ``argument[index] = value`` on a copy."""
    def mutate(args):
        args[name] = args[name].copy()
        args[name][index] = value
    return mutate


def readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def strided(a):
    """The same values, not C-contiguous (every other element of a wider array)."""
    return np.repeat(a, 2, axis=a.ndim - 1)[..., ::2]


def array_cases(args, outputs, defining):
    """The valid call, then for every array argument: a wrong dtype, not C-contiguous, one
    row short (unless its extent defines the others') and read-only (outputs)."""
    cases = [("valid", None, lambda a: None)]
    for name, value in args.items():
        if not isinstance(value, np.ndarray):
            continue
        cases.append((f"{name}: wrong dtype", rf"^{name}: wrong dtype",
                      set_(name, lambda a, t=WRONG_DTYPE[value.dtype]: a.astype(t))))
        cases.append((f"{name}: not C-contiguous", rf"^{name}: array must be C-contiguous", set_(name, strided)))
        if name not in defining:
            cases.append((f"{name}: short", rf"^{name}: wrong shape", set_(name, lambda a: a[:-1].copy())))
        if name in outputs:
            cases.append((f"{name}: read-only", rf"^{name}: array is read-only", set_(name, readonly)))
    return cases


def print_verdicts(fn, cases, inputs):
    """In the child: call ``fn`` positionally with each case's arguments (fresh from
    ``inputs()``) and print a JSON verdict per case."""
    for case, _, mutate in cases:
        args = inputs()
        mutate(args)
        try:
            fn(*args.values())
            verdict = dict(case=case, error=None, message="")
        except Exception as exc:  # noqa: BLE001 - the verdict reports any class
            verdict = dict(case=case, error=type(exc).__name__, message=str(exc))
        print(json.dumps(verdict), flush=True)


def spawn(module, call):
    """Start a child that imports test module ``module`` (from the folder of the calling
    test) and runs ``module.call``; its cwd is outside the source tree, so it imports the
    installed pyglmm (with its extension), as pytest does."""
    here = os.path.dirname(os.path.abspath(sys.modules[module].__file__))
    code = f"import sys; sys.path[:0] = [{here!r}, {TESTS!r}]; import {module}; {module}.{call}"
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tempfile.gettempdir())


def collect(proc, timeout):
    """(returncode, verdicts by case, stderr) of a child from :func:`spawn`."""
    stdout, stderr = proc.communicate(timeout=timeout)
    return proc.returncode, {v["case"]: v for v in map(json.loads, stdout.splitlines())}, stderr


def assert_verdicts(cases, returncode, got, stderr):
    """Every case ran (no crash) and raised ValueError matching its regex, or succeeded
    where its regex is None."""
    missing = [c for c, _, _ in cases if c not in got]
    assert returncode == 0 and not missing, (
        f"crashed (exit code {returncode}) on case {missing[:1]} (after {len(got)} of "
        f"{len(cases)}): {stderr[-2000:]}")
    wrong = []
    for case, pattern, _ in cases:
        v = got[case]
        ok = v["error"] is None if pattern is None else (
            v["error"] == "ValueError" and re.search(pattern, v["message"]) is not None)
        if not ok:
            wrong.append(f"{case}: expected {pattern!r}, got {v['error']}: {v['message']!r}")
    assert not wrong, "\n".join(wrong)
