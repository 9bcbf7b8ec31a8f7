"""Plain-text display of a fit, laid out as lme4 and MixedModels.jl do:
header and formula, fit statistics, variance components with level counts,
coefficient table."""

import numpy as np


def _fmt_p(p):
    return "<1e-99" if p < 1e-99 else (f"{p:.2e}" if p < 1e-4 else f"{p:.4f}")


def _table(header, rows, first_width):
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    widths[0] = max(widths[0], first_width)
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header)] + [line(r) for r in rows])


def format_summary(res):
    """The printed summary of a :class:`~pyglmm.GLMMResult`."""
    status = "converged" if res.converged else "NOT CONVERGED"
    disp = ("estimated" if res.dispersion_mode == "estimate" else "fixed at 1")
    lines = [
        "Generalized linear mixed model fit by PQL (Schall; clubbed backfitting, diagonal trace)",
        f"  Formula: {res.formula}",
        f"  Family: {res.family} ({res.link}); dispersion {disp}",
        f"  Fit: {res.iterations} outer iterations ({res.inner_sweeps} inner sweeps), {status}; "
        f"{res.seconds:.3g} s on backend {res.backend} ({res.threads} thread"
        f"{'s' if res.threads != 1 else ''})",
        *([f"  Separation: the estimates of {', '.join(map(repr, res.separation))} diverge "
           "(no finite estimate; see the warning below)"] if res.separation else []),
        "",
        _table(["", "deviance", "Pearson chi2", "Pearson chi2/df", "dispersion"],
               [["", f"{res.deviance:.4f}", f"{res.pearson_chi2:.4f}",
                 f"{res.pearson_chi2 / res.df_resid:.4f}", f"{res.dispersion:.4f}"]], 0),
        "  (PQL has no likelihood; deviance is that of the conditional model at the modes)",
        "",
        "Variance components:",
    ]
    rows = [[name, f"{res.n_levels[name]:,}", f"{sd**2:.6g}", f"{sd:.6g}"]
            for name, sd in res.sigma.items()]
    if res.family == "gaussian":
        rows.append(["Residual", "", f"{res.dispersion:.6g}", f"{np.sqrt(res.dispersion):.6g}"])
    lines.append(_table(["Group", "Levels", "Variance", "Std.Dev."], rows, 8))
    lines.append(f" Number of obs: {res.n_obs:,}; groups: "
                 + ", ".join(f"{k} {v:,}" for k, v in res.n_levels.items()))
    lines += ["", "Fixed effects:"]
    tab = res.coef_table()
    if "se" in tab:
        rows = [[name, f"{r.coef:.6g}", f"{r.se:.6g}", f"{r.z:.2f}", _fmt_p(r.p_value),
                 f"{r.ci_lower:.6g}", f"{r.ci_upper:.6g}"] for name, r in tab.iterrows()]
        lines.append(_table(["", "Coef.", "Std. Error", "z", "Pr(>|z|)", "Lower 95%", "Upper 95%"],
                            rows, 10))
    else:
        lines.append(_table(["", "Coef."], [[n, f"{v:.6g}"] for n, v in tab.coef.items()], 10))
    for note in res.warnings:
        lines.append(f"Warning: {note}")
    return "\n".join(lines)


def format_naive(res):
    """The naive-regression comparison of Section 6 as text."""
    tab, info = res.naive, res.naive_summary
    rows = [[name, f"{r.coef_naive:.5g}", f"{r.se_naive:.4g}", f"{r.se_naive_under_glmm:.4g}",
             f"{r.naivete:.3g}", f"{r.inefficiency:.3g}"] for name, r in tab.iterrows()]
    what = "logistic" if res.family == "binomial" else "least-squares"
    return "\n".join([
        f"Naive {what} regression (random effects ignored) vs the GLMM:",
        _table(["", "Coef.", "SE naive", "SE under GLMM", "naivete", "inefficiency"], rows, 10),
        "  naivete = var_GLMM(beta_naive) / var_naive(beta_naive);"
        " inefficiency = var_GLMM(beta_naive) / var_GLMM(beta_GLMM)",
        f"  largest over linear combinations: naivete {info['max_naivete']:.4g}, "
        f"inefficiency {info['max_inefficiency']:.4g}",
    ])
