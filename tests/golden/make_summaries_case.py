"""Write tests/fixtures/summaries_paper.csv: the Limpoco, Faes & Hens (2025) design
at (m, n_h) = (30, 100), seed 1 (tests/engines/summaries/paper.py), plus a cluster-level column w.  Then
`Rscript tests/golden/refit_summaries.R` adds the glmer fits."""

import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "engines" / "summaries"))

from paper import simulate  # noqa: E402

if __name__ == "__main__":
    df = simulate(30, 100, seed=1)
    df["w"] = (df["cluster"] % 5 - 2) / 2  # a cluster-level covariate (constant in each cluster)
    df.to_csv(HERE.parent / "fixtures" / "summaries_paper.csv", index=False)
