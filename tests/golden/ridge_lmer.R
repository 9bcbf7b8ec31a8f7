# Golden values for the ridge engine's lme4 agreement tests (tests/engines/ridge/).
# lmer ML fits (REML = FALSE) with tight optimiser tolerances (bobyqa, rhoend 1e-12), so that
# the references are the maximum itself, not lme4's default stopping point (on lmm_m40_r5 the
# default fit stops 3e-6 below the maximum, 2e-3 off in Sigma's largest entries).
# Run from the repository root:  Rscript tests/golden/ridge_lmer.R
# Writes tests/fixtures/sleepstudy.csv and tests/fixtures/ridge_lmer.json.
library(lme4)
library(jsonlite)
data(sleepstudy)
write.csv(sleepstudy, "tests/fixtures/sleepstudy.csv", row.names = FALSE)
ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e6),
                    check.conv.singular = "ignore")
cases <- list(
  lmm_m40_r5 = list(data = read.csv("tests/fixtures/lmm_m40_r5.csv"),
                    formula = "y ~ t + t2 + t3 + (1 + t + t2 + t3 | ind)"),
  sleepstudy = list(data = sleepstudy, formula = "Reaction ~ Days + (Days | Subject)"),
  ridge_singular_cubic = list(data = read.csv("tests/fixtures/ridge_singular_cubic.csv"),
                              formula = "y ~ x1 + x2 + (1 + t + t2 + t3 | ind)"),
  ridge_singular_cubic8 = list(data = read.csv("tests/fixtures/ridge_singular_cubic8.csv"),
                               formula = "y ~ x1 + x2 + (1 + t + t2 + t3 | ind)"))
out <- list()
for (name in names(cases)) {
  cs <- cases[[name]]
  f <- lmer(as.formula(cs$formula), data = cs$data, REML = FALSE, control = ctrl)
  S <- as.matrix(VarCorr(f)[[1]])
  attr(S, "stddev") <- NULL; attr(S, "correlation") <- NULL
  out[[name]] <- list(formula = cs$formula, beta = unname(fixef(f)), beta_names = names(fixef(f)),
                      se = unname(sqrt(diag(as.matrix(vcov(f))))),
                      Sigma = unname(S), sigma = sigma(f), loglik = as.numeric(logLik(f)),
                      singular = isSingular(f), lme4 = as.character(packageVersion("lme4")))
}
writeLines(toJSON(out, digits = I(15), auto_unbox = TRUE, pretty = TRUE), "tests/fixtures/ridge_lmer.json")
