"""Errors and warnings that pyglmm raises."""


class DataError(ValueError):
    """The data cannot be fitted as given; the message says where and why."""


class SingularMatrixError(DataError):
    """A matrix that must be invertible (or positive definite) is not.

    The message names the matrix and the columns or factors to blame: a column
    that is zero or a linear combination of others (on the rows with positive
    weight), or one that is constant within every level of a grouping factor.
    """


class ClusterError(RuntimeError):
    """A Dask cluster could not run the work: its scheduler cannot be reached or was
    lost, it has no worker, or its workers kept dying (most often over their memory
    limit).  The message says which, and what to do.  Errors in the data that a worker
    finds are :class:`DataError`, naming the partition.
    """


class ConvergenceWarning(UserWarning):
    """A loop stopped at its iteration limit before reaching its tolerance."""


class SeparationWarning(ConvergenceWarning):
    """Some fixed effects (quasi-)separate the response: their estimates diverge.

    The fit stops as soon as separation is certain; the result names the
    columns in ``GLMMResult.separation``.
    """


class SingularFitWarning(UserWarning):
    """A variance component was estimated at (numerically) zero: a boundary fit."""
