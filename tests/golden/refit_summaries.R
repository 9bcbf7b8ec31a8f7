# glmer fits of tests/fixtures/summaries_paper.csv (actual data), one JSON line per nAGQ,
# written to tests/fixtures/summaries_paper.fits.jsonl.  Needs R with lme4 and jsonlite.
suppressMessages({library(lme4); library(jsonlite)})
d <- read.csv("tests/fixtures/summaries_paper.csv")
d$x3 <- factor(d$x3)
lines <- character(0)
for (k in c(1L, 7L, 25L)) {
  f <- glmer(y ~ x1 + x2 + x3 + (1 | cluster), d, family = binomial, nAGQ = k,
             control = glmerControl(optimizer = "bobyqa", optCtrl = list(maxfun = 1e5)))
  lines <- c(lines, toJSON(list(engine = sprintf("glmer_nAGQ%d", k),
    formula = "y ~ x1 + x2 + C(x3)", N = nrow(d),
    names = c("Intercept", "x1", "x2", "C(x3)[T.b]", "C(x3)[T.c]"),
    beta = unname(fixef(f)), se = unname(sqrt(diag(as.matrix(vcov(f))))),
    sigma_cluster = unname(sqrt(VarCorr(f)$cluster[1])), loglik = as.numeric(logLik(f))),
    auto_unbox = TRUE, digits = NA))
}
# exact cases for the direct fit: no within-cluster covariates (intercept only; a cluster-level w)
for (k in c(1L, 7L)) for (w in c(FALSE, TRUE)) {
  f <- glmer(if (w) y ~ w + (1 | cluster) else y ~ 1 + (1 | cluster), d, family = binomial,
             nAGQ = k, control = glmerControl(optimizer = "bobyqa",
                                              optCtrl = list(maxfun = 1e5), tolPwrss = 1e-10))
  lines <- c(lines, toJSON(list(engine = sprintf("glmer_nAGQ%d", k),
    formula = if (w) "y ~ w" else "y ~ 1", N = nrow(d),
    names = if (w) c("Intercept", "w") else "Intercept",
    beta = unname(fixef(f)), se = unname(sqrt(diag(as.matrix(vcov(f))))),
    sigma_cluster = unname(sqrt(VarCorr(f)$cluster[1])), loglik = as.numeric(logLik(f))),
    auto_unbox = TRUE, digits = NA))
}
writeLines(lines, "tests/fixtures/summaries_paper.fits.jsonl")
