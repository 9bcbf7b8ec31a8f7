"""The Li et al. simulation script runs and its table counts what it promises (one
replicate per setting, Laplace only)."""

import federated_simulation as sim


def test_one_replicate_per_setting():
    fits = sim.run(1, 1, methods=(1,))
    assert len(fits) == len(sim.SETTINGS) and (fits.failed == "").all()
    table = sim.summarise(fits)
    assert list(table.setting) == list(sim.SETTINGS)
    assert (table["fits"] == 1).all()
    assert (table["not converged"] == (~fits.converged.astype(bool)).to_numpy().astype(int)).all()
    assert (table["separated"] <= table["not converged"]).all()  # a separated fit is not converged
