"""Plain-text display of a fit, laid out as lme4 and MixedModels.jl do:
header and formula, fit statistics, variance components with level counts,
coefficient table.  No log-likelihood, AIC or BIC is shown for a method that has
none (PQL); the result's ``likelihood_note`` says so."""


def fmt_p(p):
    return "<1e-99" if p < 1e-99 else (f"{p:.2e}" if p < 1e-4 else f"{p:.4f}")


def table(header, rows, first_width, left=1):
    """Columns padded to their widest cell, the first ``left`` left-aligned and the others right."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    widths[0] = max(widths[0], first_width)
    line = lambda cells: "  ".join(c.ljust(w) if i < left else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header)] + [line(r) for r in rows])


def format_summary(res):
    """The printed summary of a :class:`~pyglmm.GLMMResult`."""
    disp = ("estimated" if res.dispersion_mode == "estimate" else "fixed at 1")
    lines = [
        f"Generalized linear mixed model fit by {res.method}",
        f"  Formula: {res.formula}",
        f"  Family: {res.family} ({res.link}); dispersion {disp}",
        f"  Fit: {res.fit_description()}",
        *([f"  Separation: the estimates of {', '.join(map(repr, res.separation))} diverge "
           "(no finite estimate; see the warning below)"] if res.separation else []),
        "",
        table(["", "deviance", "Pearson chi2", "Pearson chi2/df", "dispersion"],
              [["", f"{res.deviance:.4f}", f"{res.pearson_chi2:.4f}",
                f"{res.pearson_chi2 / res.df_resid:.4f}", f"{res.dispersion:.4f}"]], 0),
    ]
    if res.loglik is not None:
        lines.append(table(["", "logLik", "AIC", "BIC"],
                           [["", f"{res.llf:.4f}", f"{res.aic:.4f}", f"{res.bic:.4f}"]], 0))
    if res.likelihood_note:
        lines.append(f"  ({res.likelihood_note})")
    lines += ["", "Variance components:"]
    groups = res.ngroups
    rows, shown = [], None
    for r in res.VarCorr().itertuples():
        group = "" if r.grp == shown else r.grp
        shown = r.grp
        if isinstance(r.var2, str):  # a covariance: show the correlation
            rows.append([group, f"corr({r.var1}, {r.var2})", "", "", f"{r.sdcor:.3f}"])
        else:
            rows.append([group, r.var1 if isinstance(r.var1, str) else "",
                         f"{groups[r.grp]:,}" if r.grp in groups else "", f"{r.vcov:.6g}",
                         f"{r.sdcor:.6g}"])
    lines.append(table(["Group", "Name", "Levels", "Variance", "Std.Dev."], rows, 8, left=2))
    lines.append(f" Number of obs: {res.nobs:,}; groups: "
                 + ", ".join(f"{k} {v:,}" for k, v in groups.items()))
    lines += ["", "Fixed effects:"]
    tab = res.coef_table()
    if "se" in tab:
        rows = [[name, f"{r.coef:.6g}", f"{r.se:.6g}", f"{r.z:.2f}", fmt_p(r.p_value),
                 f"{r.ci_lower:.6g}", f"{r.ci_upper:.6g}"] for name, r in tab.iterrows()]
        lines.append(table(["", "Coef.", "Std. Error", "z", "Pr(>|z|)", "Lower 95%", "Upper 95%"],
                           rows, 10))
    else:
        lines.append(table(["", "Coef."], [[n, f"{v:.6g}"] for n, v in tab.coef.items()], 10))
    for note in res.warnings:
        lines.append(f"Warning: {note}")
    return "\n".join(lines)
