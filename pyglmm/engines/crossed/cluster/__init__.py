"""The crossed engine on a Dask cluster: fits of a ``dask.dataframe.DataFrame``
(:mod:`.fit`, the passes :mod:`.passes` runs over the partitions of
:mod:`.partition`) and scoring one lazily (:mod:`.scoring`).  Importing this
package imports no Dask; the modules that need it do, when used."""


def is_dask_frame(data):
    """Whether ``data`` is a dask DataFrame (checked without importing dask)."""
    return type(data).__module__.split(".")[0] == "dask" and hasattr(data, "npartitions")
