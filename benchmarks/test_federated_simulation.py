"""The Li et al. simulation script runs and its table counts what it promises (two
replicates per setting, Laplace only)."""

import federated_simulation as sim


def test_two_replicates_per_setting():
    fits = sim.run(2, 1, methods=(1,))
    assert len(fits) == 2 * len(sim.SETTINGS) and (fits.failed == "").all()
    table = sim.summarise(fits).set_index("setting")
    assert list(table.index) == list(sim.SETTINGS) and (table["fits"] == 2).all()
    unconverged = (~fits.converged.astype(bool)).groupby(fits.setting).sum()
    assert (table["not converged"] == unconverged).all()
    assert (table["separated"] <= table["not converged"]).all()  # a separated fit is not converged
