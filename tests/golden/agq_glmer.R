# Golden values for the AGQ engine (tests/engines/agq/): glmer / lmer fits and
# glmer deviance functions at fixed parameters.  Run from the repository root:
#   Rscript tests/golden/agq_glmer.R
# Writes the data sets it makes (tests/fixtures/agq_*.csv) and
# tests/fixtures/agq_glmer.json.  The sites_* data are copies of the shared
# reference (see tests/fixtures/README.md).  Fits use tight tolerances (bobyqa
# rhoend 1e-10, and tolPwrss 1e-12 for the conditional modes: at the default
# 1e-7 glmer's Laplace deviance is off by ~1e-3) so that they are references to
# ~1e-6; glmer's default fit is also recorded ("default") for comparison.
# For nAGQ > 1 glmer's deviance (and logLik) leaves out the saturated model's
# log-likelihood (it sums deviance residuals); for nAGQ = 1 it does not.
# theta is lme4's: Lambda's lower triangle in COLUMN-major order (for q <= 2 the
# same as pyglmm's row-major order).
suppressMessages({library(lme4); library(jsonlite)})
fx <- function(name) file.path("tests/fixtures", name)
tight <- glmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-10, maxfun = 1e5),
                      tolPwrss = 1e-12)
summ <- function(fit, nagq, control) {
  vc <- VarCorr(fit)[[1]]
  list(nagq = nagq, control = control, beta = unname(fixef(fit)), names = names(fixef(fit)),
       se = unname(sqrt(diag(as.matrix(vcov(fit))))), theta = unname(getME(fit, "theta")),
       cov = unname(as.matrix(vc)), sigma = sigma(fit), loglik = as.numeric(logLik(fit)),
       singular = isSingular(fit), condval = as.data.frame(ranef(fit, condVar = TRUE))$condval,
       condsd = as.data.frame(ranef(fit, condVar = TRUE))$condsd, messages = as.character(unlist(fit@optinfo$conv$lme4$messages)))
}
fit1 <- function(f, d, family, k, w, ...) {  # do.call: glmer evaluates weights in its caller's frame
  args <- list(formula = f, data = d, family = family, nAGQ = k, ...)
  if (!is.null(w)) args$weights <- w
  do.call(glmer, args)
}
fits <- function(f, d, family, nagqs, w = NULL) {
  out <- list()
  for (k in nagqs) {
    out[[length(out) + 1]] <- summ(fit1(f, d, family, k, w, control = tight), k, "tight")
    out[[length(out) + 1]] <- summ(fit1(f, d, family, k, w), k, "default")
  }
  out
}
devs <- function(f, d, family, nagqs, theta, beta, w = NULL) {
  lapply(nagqs, function(k) {
    dev <- fit1(f, d, family, k, w, devFunOnly = TRUE, control = glmerControl(tolPwrss = 1e-12))
    list(nagq = k, theta = theta, beta = beta, deviance = dev(c(theta, beta)))
  })
}
golden <- list()

# 1. shared sites cases (glmer nAGQ = 1, 2, 5, 10), tight refits
for (case in c("sites_m10_n30_L", "sites_m2_n500_S", "sites_m10_n500_L")) {
  d <- read.csv(fx(paste0(case, ".csv")))
  f <- as.formula(paste("y ~", paste(names(d)[-(1:2)], collapse = " + "), "+ (1|site)"))
  golden[[case]] <- list(formula = deparse(f, width.cutoff = 500L), family = "binomial",
                         fits = fits(f, d, binomial, c(1, 2, 5, 10)),
                         devfun = devs(f, d, binomial, c(1, 2, 5, 10), 1.3, c(-1, seq(0.5, -0.5, length.out = 10))))
}

# 2. cbpp: binomial with trials
data(cbpp)
write.csv(cbpp, fx("agq_cbpp.csv"), row.names = FALSE)
f <- cbind(incidence, size - incidence) ~ period + (1 | herd)
golden$agq_cbpp <- list(formula = "incidence ~ C(period) + (1|herd)", trials = "size", family = "binomial",
                        fits = fits(f, cbpp, binomial, c(1, 5)),
                        devfun = devs(f, cbpp, binomial, c(1, 3), 0.7, c(-1.2, -0.9, -1.1, -1.5)))

# 3. simulated random slopes (q = 2), binomial, Laplace
set.seed(20261130)
m <- 80; n <- 12
d <- data.frame(g = rep(seq_len(m), each = n), x = rnorm(m * n), t = rep(seq(0, 1, length.out = n), m))
L <- matrix(c(0.9, 0, -0.4, 0.6), 2, 2, byrow = TRUE)
b <- matrix(rnorm(2 * m), m) %*% t(L)
eta <- -0.3 + 0.7 * d$x + 0.5 * d$t + b[d$g, 1] + b[d$g, 2] * d$t
d$y <- rbinom(m * n, 1, plogis(eta))
write.csv(d, fx("agq_slopes_binomial.csv"), row.names = FALSE)
f <- y ~ x + t + (1 + t | g)
golden$agq_slopes_binomial <- list(formula = "y ~ x + t + (1 + t|g)", family = "binomial",
                                   fits = fits(f, d, binomial, 1),
                                   devfun = devs(f, d, binomial, 1, c(0.8, -0.3, 0.5), c(-0.2, 0.6, 0.4)))

# 4. simulated poisson with exposure (offset) and prior weights, random intercept and slope
set.seed(30112026)
m <- 60; n <- 10
d <- data.frame(g = rep(seq_len(m), each = n), x = rnorm(m * n), logexp = log(runif(m * n, 0.5, 3)),
                w = sample(1:3, m * n, replace = TRUE))
a <- rnorm(m, 0, 0.5); s <- rnorm(m, 0, 0.3)
d$y <- rpois(m * n, exp(d$logexp + 0.4 + 0.3 * d$x + a[d$g] + s[d$g] * d$x))
write.csv(d, fx("agq_poisson.csv"), row.names = FALSE)
f <- y ~ x + (1 | g) + offset(logexp)
golden$agq_poisson <- list(formula = "y ~ x + (1|g)", offset = "logexp", weights = "w", family = "poisson",
                           fits = fits(f, d, poisson, c(1, 7), w = d$w),
                           devfun = devs(f, d, poisson, c(1, 7), 0.6, c(0.3, 0.2), w = d$w))
f <- y ~ x + (1 + x | g) + offset(logexp)
golden$agq_poisson_slope <- list(formula = "y ~ x + (1 + x|g)", offset = "logexp", family = "poisson",
                                 fits = fits(f, d, poisson, 1))

# 5. gaussian: sleepstudy, lmer ML (REML = FALSE)
data(sleepstudy)
write.csv(sleepstudy, fx("agq_sleepstudy.csv"), row.names = FALSE)
fit <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy, REML = FALSE)
golden$agq_sleepstudy <- list(formula = "Reaction ~ Days + (Days|Subject)", family = "gaussian",
                              fits = list(summ(fit, 1, "default")))

golden$made_with <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                         date = as.character(Sys.Date()))
writeLines(toJSON(golden, auto_unbox = TRUE, digits = NA, pretty = TRUE), fx("agq_glmer.json"))
cat("wrote", fx("agq_glmer.json"), "\n")
