"""The crossed engine on a Dask cluster: fits of a ``dask.dataframe.DataFrame``
(:mod:`.fit`, the passes :mod:`.passes` runs over the partitions of
:mod:`.partition`) and scoring one lazily (:mod:`.scoring`).  Importing this
package imports no Dask; the modules that need it do, when used."""

import sys


def is_dask_frame(data):
    """Whether ``data`` is a dask DataFrame (there is none unless dask.dataframe is loaded)."""
    dd = sys.modules.get("dask.dataframe")
    return dd is not None and isinstance(data, dd.DataFrame)
