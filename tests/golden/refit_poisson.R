# Reference fits for the crossed Poisson case crossed_poisson_s1e4 (made by make_poisson_case.py).
# Standalone (it does not need or change tests/golden/refit.R):
#     Rscript refit_poisson.R [DATADIR]        (DATADIR defaults to ".")
# reads DATADIR/crossed_poisson_s1e4.csv and writes DATADIR/crossed_poisson_s1e4.fits.jsonl,
# one JSON line per fit of y ~ x1 + x2 + (1|row) + (1|col) + offset(logexp), family poisson:
#   glmer_nAGQ0, glmer_nAGQ1                   unweighted
#   glmer_nAGQ0_weights, glmer_nAGQ1_weights   prior weights w
#   glmmTMB, glmmTMB_weights                   Laplace, if glmmTMB is installed
# Keys as in tests/data/*.fits.jsonl (engine, N, seconds, beta, se, sigma_row, sigma_col,
# loglik), plus, following pyglmm's shared/reference files, names (coefficient names, in the
# order of beta and se) and singular; plus versions (R and packages) and, only when R
# raised any, warnings.
suppressMessages({library(lme4); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
datadir <- if (length(args)) args[1] else "."
case <- "crossed_poisson_s1e4"
d <- read.csv(file.path(datadir, paste0(case, ".csv")))
f <- y ~ x1 + x2 + (1 | row) + (1 | col) + offset(logexp)
rver <- paste(R.version$major, R.version$minor, sep = ".")
pkgv <- function(p) packageDescription(p)$Version  # "1.1-31", as the README writes it

# run expr, timing it and collecting (without printing) its warnings
timed <- function(expr) {
  warns <- character()
  t <- system.time(fit <- withCallingHandlers(expr, warning = function(w) {
    warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning")
  }))[["elapsed"]]
  list(fit = fit, secs = t, warns = warns)
}

line <- function(engine, beta, V, sds, loglik, N, secs, singular, versions, warns) {
  out <- list(engine = engine, N = N, seconds = round(secs, 3),
              names = names(beta), beta = round(unname(beta), 5),
              se = round(unname(sqrt(diag(V))), 5),
              sigma_row = round(sds[["row"]], 5), sigma_col = round(sds[["col"]], 5),
              loglik = round(loglik, 4), singular = singular, versions = versions)
  if (length(warns)) out$warnings <- unique(warns)
  toJSON(out, auto_unbox = TRUE, digits = NA)
}

glmer_line <- function(engine, r) {
  fit <- r$fit
  vc <- as.data.frame(VarCorr(fit))
  sds <- setNames(vc$sdcor, vc$grp)
  warns <- c(r$warns, fit@optinfo$conv$lme4$messages)
  line(engine, fixef(fit), as.matrix(vcov(fit)), sds, as.numeric(logLik(fit)), nobs(fit),
       r$secs, isSingular(fit), list(R = rver, lme4 = pkgv("lme4"), Matrix = pkgv("Matrix")), warns)
}

lines <- c()
for (q in c(0, 1)) {
  r <- timed(glmer(f, d, poisson, nAGQ = q))
  lines <- c(lines, glmer_line(paste0("glmer_nAGQ", q), r))
  cat(tail(lines, 1), "\n")
}
for (q in c(0, 1)) {
  r <- timed(glmer(f, d, poisson, weights = w, nAGQ = q))
  lines <- c(lines, glmer_line(paste0("glmer_nAGQ", q, "_weights"), r))
  cat(tail(lines, 1), "\n")
}

if (requireNamespace("glmmTMB", quietly = TRUE)) {
  suppressMessages(library(glmmTMB))
  tmb_line <- function(engine, r) {
    fit <- r$fit
    vc <- VarCorr(fit)$cond
    sds <- sapply(c("row", "col"), function(g) attr(vc[[g]], "stddev")[[1]])
    line(engine, fixef(fit)$cond, vcov(fit)$cond, sds, as.numeric(logLik(fit)), nobs(fit),
         r$secs, any(sds < 1e-4), list(R = rver, glmmTMB = pkgv("glmmTMB"), TMB = pkgv("TMB")),
         c(r$warns, if (!is.null(fit$fit$convergence) && fit$fit$convergence != 0) fit$fit$message))
  }
  for (wt in c(FALSE, TRUE)) {
    r <- if (wt) timed(glmmTMB(f, d, family = poisson, weights = w))
         else timed(glmmTMB(f, d, family = poisson))
    lines <- c(lines, tmb_line(if (wt) "glmmTMB_weights" else "glmmTMB", r))
    cat(tail(lines, 1), "\n")
  }
} else cat("glmmTMB not installed: no glmmTMB lines\n")

out <- file.path(datadir, paste0(case, ".fits.jsonl"))
writeLines(lines, out)
cat("wrote", out, "\n")
