"""Errors and warnings that pyglmm raises."""


class DataError(ValueError):
    """The data cannot be fitted as given; the message says where and why."""


class ConvergenceWarning(UserWarning):
    """A loop stopped at its iteration limit before reaching its tolerance."""


class SingularFitWarning(UserWarning):
    """A variance component was estimated at (numerically) zero: a boundary fit."""
