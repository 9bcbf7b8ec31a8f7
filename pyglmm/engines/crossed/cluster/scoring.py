"""Scoring a dask DataFrame lazily: ``result.predict(ddf)``.

The model crosses to the workers once, as the JSON text of its model file
(:func:`pyglmm.results.io.to_dict`; nothing executable), as one node of the
graph that every partition's task depends on; each worker parses it once and
keeps the :class:`~pyglmm.results.scoring.Scorer` for the partitions it scores.
"""

import json
from functools import lru_cache

import numpy as np
import pandas as pd

from ....exceptions import DataError


def predict_dask(res, ddf, *, type="link", new_levels="population", partition_names=None):
    """A lazy dask Series of the predictions of ``res`` for the rows of ``ddf`` (one
    partition per partition of ``ddf``, same index); see
    :func:`pyglmm.results.scoring.predict` for ``type`` and ``new_levels``.  Unlike
    the in-process predict, it has no ``attrs["population_rows"]`` (it is lazy).
    Errors name the partition (``partition_names[i]``, e.g. its file, if given)."""
    import dask
    from ....results.io import to_dict
    from ....results.scoring import Scorer

    Scorer(res, type=type, new_levels=new_levels)  # the options' errors, here and now
    if res.coding is None:
        raise ValueError("this model was fitted from arrays: a dask DataFrame is scored by a "
                         "formula fit's columns; score arrays with predict(X=..., groups=...)")
    if res.has_offset and not res.offset_name:
        raise ValueError("this model was fitted with an offset array, not a column: a dask "
                         "DataFrame cannot supply it")
    model = dask.delayed(json.dumps(to_dict(res, full=True), separators=(",", ":")), pure=True)
    name = "eta" if type == "link" else "mu"
    names = None if partition_names is None else list(partition_names)
    return ddf.map_partitions(_score, model, type, new_levels, name, names,
                              meta=pd.Series(dtype=np.float64, name=name))


@lru_cache(maxsize=4)
def _scorer(text, type, new_levels):
    from ....results.io import from_dict
    from ....results.scoring import Scorer

    return Scorer(from_dict(json.loads(text)), type=type, new_levels=new_levels, threads=1)


def _score(frame, text, type, new_levels, name, names, partition_info=None):
    scorer = _scorer(text, type, new_levels)
    out = np.empty(len(frame))
    try:
        missing = [c for c in scorer.columns if c not in frame.columns]
        if missing:
            raise DataError(f"the data lack column(s) {', '.join(map(repr, missing))}")
        if len(frame):
            scorer.score_frame(frame, out)
    except DataError as exc:
        number = None if partition_info is None else partition_info["number"]
        where = f"partition {number}" if names is None or number is None else names[number]
        raise DataError(f"{where}: {exc}") from None
    return pd.Series(out, index=frame.index, name=name)
