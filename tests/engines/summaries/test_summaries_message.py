"""The site message: exact float64 round trip, versioning, and bad messages rejected
with an error that names the site file, the field and the cluster."""

import copy
import json
import struct

import numpy as np
import pytest

from paper import FORMULA, simulate
from pyglmm.engines.summaries import read_summary, site_summary, write_summary
from pyglmm.engines.summaries.message import SCHEMA_VERSION, dumps


@pytest.fixture(scope="module")
def msg():
    return site_summary(simulate(4, 40, seed=2), FORMULA, "cluster", order=3, site="north")


def _write(tmp_path, d, name="site.json"):
    path = tmp_path / name
    path.write_text(json.dumps(d))
    return path


def test_round_trip_is_exact(tmp_path, msg):
    path = tmp_path / "north.json"
    write_summary(msg, path)
    back = read_summary(path)
    for key in ("mean", "y_cross", "moments"):
        want = np.array([c[key] for c in msg["clusters"]])
        assert np.array_equal(back[key], want)  # bit for bit
    assert back["site"] == "north" and back["order"] == 3 and back["labels"] == ["0", "1", "2", "3"]
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION


def test_awkward_floats_round_trip_bit_for_bit(tmp_path, msg):
    d = copy.deepcopy(msg)
    awkward = [1 / 3, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, -0.1 - 0.2,
               float.fromhex("0x1.fffffffffffffp-2")]
    d["clusters"][0]["mean"][:2] = awkward[:2]  # continuous columns: no other check depends on them
    d["clusters"][1]["mean"][:2] = awkward[2:4]
    d["clusters"][2]["mean"][:2] = awkward[4:6]
    path = tmp_path / "awkward.json"
    write_summary(d, path)
    back = read_summary(path)["mean"][:3, :2].ravel()
    assert [struct.pack("<d", v) for v in back] == [struct.pack("<d", v) for v in awkward]


def test_non_finite_values_are_refused_on_writing_and_reading(tmp_path, msg):
    d = copy.deepcopy(msg)
    d["clusters"][0]["mean"][0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        dumps(d)
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(d))  # Python writes NaN as a bare NaN token
    with pytest.raises(ValueError, match=rf"site file {path}: holds NaN"):
        read_summary(path)


def _broken(msg, edit):
    d = copy.deepcopy(msg)
    edit(d)
    return d


def _set(path, value):
    def edit(d):
        obj = d
        for key in path[:-1]:
            obj = obj[key]
        if value is KeyError:
            del obj[path[-1]]
        else:
            obj[path[-1]] = value
    return edit


CASES = [
    # (edit, field named, cluster named or None)
    (_set(["format"], "other"), "format", None),
    (_set(["schema_version"], SCHEMA_VERSION + 1), "schema_version", None),
    (_set(["schema_version"], KeyError), "schema_version", None),
    (_set(["order"], 7), "order", None),
    (_set(["columns"], KeyError), "columns", None),
    (_set(["coding"], {"formula": "x1"}), "coding", None),
    (_set(["binary"], [True]), "binary", None),
    (_set(["moment_index"], [[0, 0]]), "moment_index", None),
    (_set(["clusters"], []), "clusters", None),
    (_set(["clusters", 1, "n"], KeyError), "clusters[1].n", "1"),
    (_set(["clusters", 1, "n"], -4), "clusters[1].n", "1"),
    (_set(["clusters", 2, "events"], -1), "clusters[2].events", "2"),
    (_set(["clusters", 2, "events"], 41), "clusters[2].events", "2"),
    (_set(["clusters", 2, "n"], 40.0), "clusters[2].n", "2"),
    (_set(["clusters", 0, "mean"], [0.1, 0.2]), "clusters[0].mean", "0"),
    (_set(["clusters", 0, "moments", 0], -0.5), "clusters[0].moments[0]", "0"),
    (_set(["clusters", 3, "moments", 1], 50.0), "clusters[3].moments", "3"),  # cov(x1, x2) > sd sd
    (_set(["clusters", 3, "mean", 2], 0.123), "clusters[3].mean[2]", "3"),  # 4.92 of 40 rows
    (_set(["clusters", 1, "y_cross", 0], 10.0), "clusters[1].y_cross", "1"),
    (_set(["clusters", 1, "id"], "0"), "clusters", "0"),
]


@pytest.mark.parametrize("edit, field, cluster", CASES)
def test_bad_message_names_the_file_field_and_cluster(tmp_path, msg, edit, field, cluster):
    path = _write(tmp_path, _broken(msg, edit))
    with pytest.raises(ValueError) as err:
        read_summary(path)
    text = str(err.value)
    assert text.startswith(f"site file {path}: field '")
    assert f"field '{field}'" in text
    if cluster is not None:
        assert f"(cluster {cluster!r})" in text


def test_a_newer_version_asks_to_upgrade(tmp_path, msg):
    path = _write(tmp_path, _broken(msg, _set(["schema_version"], SCHEMA_VERSION + 1)))
    with pytest.raises(ValueError, match="upgrade pyglmm"):
        read_summary(path)


def test_reading_does_not_run_code(tmp_path, msg):
    # a message is data: a field holding code-like text is checked as text, never evaluated
    d = _broken(msg, _set(["site"], "__import__('os').system('exit 3')"))
    path = _write(tmp_path, d)
    assert read_summary(path)["site"] == d["site"]
    path.write_text("(lambda: 1)()")
    with pytest.raises(ValueError, match="not JSON"):
        read_summary(path)


@pytest.mark.parametrize("content,why", [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b"\xff\xfegarbage", "'utf-8' codec can't decode byte 0xff"),
])
def test_deeply_nested_or_non_utf8_file_names_the_file(tmp_path, content, why):
    path = tmp_path / "site.json"
    path.write_bytes(content)
    with pytest.raises(ValueError) as err:
        read_summary(path)
    assert str(err.value).startswith(f"site file {path}: not a pyglmm summaries message (not JSON: {why}")
