# Regenerates the lme4 reference fits in tests/fixtures/*.fits.jsonl.
# Run from the repository root: Rscript tests/golden/refit.R [case ...]
# Binomial crossed cases: glmer nAGQ = 0 and 1 (the committed files are copies of
# pyglmm's shared reference, made with R 4.2.2 and lme4 1.1-31; they also hold a
# glmmTMB line, which this script does not redo).  Gaussian case: lmer, ML and REML.
# Checked 2026-11-24 with R 4.2.2 / lme4 1.1-31: nAGQ = 0 reproduced to 5 decimals.
suppressMessages({library(lme4); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
cases <- if (length(args)) args else c("crossed_trend_s1e4", "crossed_zero_s1e4", "crossed_gauss_s3e3")
line <- function(engine, fit, secs) {
  vc <- as.data.frame(VarCorr(fit))
  out <- list(engine = engine, N = nobs(fit), seconds = round(secs, 3),
              beta = round(unname(fixef(fit)), 5), se = round(unname(sqrt(diag(vcov(fit)))), 5),
              sigma_row = round(vc$sdcor[vc$grp == "row"], 5), sigma_col = round(vc$sdcor[vc$grp == "col"], 5),
              loglik = round(as.numeric(logLik(fit)), 4))
  if (family(fit)$family == "gaussian") out$sigma <- round(sigma(fit), 5)
  toJSON(out, auto_unbox = TRUE, digits = NA)
}
for (case in cases) {
  d <- read.csv(file.path("tests/fixtures", paste0(case, ".csv")))
  xs <- grep("^x", names(d), value = TRUE)
  f <- as.formula(paste("y ~", paste(xs, collapse = " + "), "+ (1|row) + (1|col)"))
  lines <- c()
  if (grepl("gauss", case)) {
    for (reml in c(FALSE, TRUE)) {
      t <- system.time(fit <- lmer(f, d, REML = reml))[["elapsed"]]
      lines <- c(lines, line(if (reml) "lmer_REML" else "lmer_ML", fit, t))
    }
  } else {
    for (q in c(0, 1)) {
      t <- system.time(fit <- glmer(f, d, binomial, nAGQ = q))[["elapsed"]]
      lines <- c(lines, line(paste0("glmer_nAGQ", q), fit, t))
    }
  }
  out <- file.path("tests/fixtures", paste0(case, ".fits.jsonl"))
  writeLines(lines, out)
  cat("wrote", out, "\n")
}
