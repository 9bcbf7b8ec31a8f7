"""Random-effect terms of lme4-style formulas (the fixed part is tested in test_coding.py)."""

import pytest

from pyglmm.data.formula import RandomTerm, parse_formula, required_columns


@pytest.mark.parametrize("text, term", [
    ("y ~ x + (1|g)", RandomTerm("g", True, ())),
    ("y ~ x + (1 + t|g)", RandomTerm("g", True, ("t",))),
    ("y ~ x + (t|g)", RandomTerm("g", True, ("t",))),          # lme4 implies the intercept
    ("y ~ x + (0 + t + u|g)", RandomTerm("g", False, ("t", "u"))),
    ("y ~ x + (t + u - 1|g)", RandomTerm("g", False, ("t", "u"))),
])
def test_random_terms(text, term):
    parsed = parse_formula(text)
    assert parsed.random == (term,) and parsed.groups == ("g",) and parsed.fixed == "x"
    assert parsed.has_slopes == (term != RandomTerm("g", True, ()))


def test_names_and_columns():
    parsed = parse_formula("y ~ x + (1 + t + s|g) + (1|h)")
    assert parsed.random[0].names == ("(Intercept)", "t", "s") and parsed.random[0].q == 3
    assert required_columns(parsed) == ["y", "x", "t", "s", "g", "h"]


@pytest.mark.parametrize("effect", ["C(t)", "t:u", "log(t)", "0"])
def test_unsupported_random_terms_are_named(effect):
    with pytest.raises(ValueError, match=rf"random-effect term \({effect.replace('(', '.').replace(')', '.')}\|g\)"):
        parse_formula(f"y ~ x + ({effect}|g)")


def test_double_bar_is_refused_as_unsupported():
    with pytest.raises(ValueError, match=r"uncorrelated random effects \(lme4's '\|\|'\) are not supported"):
        parse_formula("y ~ x + (1 + x || g)")
