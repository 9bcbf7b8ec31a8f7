"""lme4-style formulas: ``y ~ x1 + C(cat) + (1|user) + (1|item)``, ``y ~ t + (1 + t|g)``.

The random-effect terms ``(1|g)``, ``(1 + t|g)``, ``(t|g)`` (an intercept is
implied, as in lme4) and ``(0 + t|g)`` are taken out here; the fixed part is
split into its terms (:func:`parse_fixed`), which :mod:`pyglmm.data.coding`
codes as R and formulaic do: treatment contrasts, first level as reference,
intercept named ``Intercept``.
"""

import re
from dataclasses import dataclass

_RANDOM = re.compile(r"\(\s*((?:[^()|]|\([^()|]*\))*?)\s*\|\s*([^()|]*?)\s*\)")
_NAME = r"[A-Za-z_.][A-Za-z0-9_.]*"
_COLUMN = re.compile(rf"(?P<name>{_NAME})|`(?P<quoted>[^`]+)`")
_CATEGORICAL = re.compile(rf"C\(\s*(?P<arg>{_NAME}|`[^`]+`)\s*\)")


@dataclass(frozen=True)
class RandomTerm:
    """One term ``(effects | group)``: the grouping column, whether the term has
    a random intercept, and its random slopes (numeric columns, formula order).
    ``names`` lists the effects as lme4 prints them, ``(Intercept)`` first."""

    group: str
    intercept: bool
    slopes: tuple

    @property
    def names(self):
        return (("(Intercept)",) if self.intercept else ()) + self.slopes

    @property
    def q(self):
        return len(self.names)


@dataclass(frozen=True)
class ParsedFormula:
    text: str
    response: str
    fixed: str
    groups: tuple
    random: tuple = ()

    @property
    def has_slopes(self):
        return any(term.slopes or not term.intercept for term in self.random)


@dataclass(frozen=True)
class FixedTerm:
    """One main effect of the fixed part: ``name`` as formulaic names it
    (``x``, ``cat``, ``C(cat)``), the data ``column`` it reads, and whether
    ``C()`` asks for categorical coding whatever the column's dtype."""

    name: str
    column: str
    forced_categorical: bool


def parse_formula(formula):
    """Split an lme4-style formula into response, fixed part and grouping factors."""
    if not isinstance(formula, str) or formula.count("~") != 1:
        raise ValueError(f"formula must look like 'y ~ x + (1|g)', got {formula!r}")
    lhs, rhs = (part.strip() for part in formula.split("~"))
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", lhs):
        raise ValueError(f"the response must be a column name, got {lhs!r}")
    if "||" in rhs:
        raise ValueError(f"formula {formula!r}: uncorrelated random effects (lme4's '||') are not supported; "
                         "write (1|g) or a correlated term such as (1 + x|g)")
    terms = []
    for effect, group in _RANDOM.findall(rhs):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", group):
            raise ValueError(f"grouping factor must be a column name, got {group!r}")
        if group in [t.group for t in terms]:
            raise ValueError(f"grouping factor {group!r} appears twice")
        terms.append(_random_term(effect, group))
    if not terms:
        raise ValueError(f"formula {formula!r} has no random-effect term such as (1|group)")
    fixed = re.sub(r"(\s*\+\s*)+", " + ", _RANDOM.sub("", rhs)).strip(" +") or "1"
    parse_fixed(fixed)  # refuse unsupported terms before any data is read
    return ParsedFormula(formula, lhs, fixed, tuple(t.group for t in terms), tuple(terms))


def _random_term(effect, group):
    """The RandomTerm of ``(effect | group)``; slopes must be plain numeric columns."""
    intercept, slopes = True, []
    for sign, piece in _signed_pieces(effect):
        if piece in ("0", "1"):
            intercept = piece == "1" and sign == "+"
        elif sign == "+" and _COLUMN.fullmatch(piece):
            if _column(piece) not in slopes:
                slopes.append(_column(piece))
        else:
            raise ValueError(f"the random-effect term ({effect}|{group}) is not supported: write "
                             f"random intercepts and slopes on numeric columns, such as (1 + t|{group})")
    if not intercept and not slopes:
        raise ValueError(f"the random-effect term ({effect}|{group}) has no effects")
    return RandomTerm(group, intercept, tuple(slopes))


def parse_fixed(fixed):
    """The intercept flag and the terms of a fixed part such as ``x + C(cat) - 1``.

    Supported: ``1``, ``0`` and ``- 1`` (the intercept, as in R), column names
    (backquoted if they are not identifiers) and ``C(column)``.  Anything else
    (interactions, transforms, contrasts other than treatment) raises
    ``ValueError`` naming the term: pyglmm codes only what it can code again,
    identically, from a saved model.

    Returns
    -------
    intercept : bool
    terms : list of FixedTerm
        In formula order, without repeats.
    """
    intercept, terms = True, {}
    for sign, piece in _signed_pieces(fixed):
        if piece in ("0", "1"):
            if sign == "-" and piece == "0":
                raise ValueError(f"the fixed-effect term '- 0' is ambiguous; write '+ 0' or '- 1' "
                                 f"to drop the intercept (formula part {fixed!r})")
            intercept = piece == "1" and sign == "+"
            continue
        term = _term(piece)
        if term is None or sign == "-":
            raise ValueError(
                f"the fixed-effect term {(sign + ' ' if sign == '-' else '') + piece!r} is not "
                "supported: pyglmm codes numeric columns, categorical columns and C(column) main "
                "effects (and '0 +' or '- 1'); compute interactions and transforms as columns of "
                "the data before fitting")
        terms.setdefault(term.name, term)
    return intercept, list(terms.values())


def _signed_pieces(text):
    """(sign, piece) at each top-level ``+`` or ``-`` (outside brackets and backquotes)."""
    pieces, depth, quoted, sign, start = [], 0, False, "+", 0
    for i, ch in enumerate(text):
        if ch == "`":
            quoted = not quoted
        elif not quoted and ch in "([{)]}":
            depth += 1 if ch in "([{" else -1
        elif not quoted and depth == 0 and ch in "+-":
            pieces.append((sign, text[start:i].strip()))
            sign, start = ch, i + 1
    pieces.append((sign, text[start:].strip()))
    return [(s, p) for s, p in pieces if p]


def _term(piece):
    """The FixedTerm that ``piece`` names, or None if it is not a supported term."""
    match = _CATEGORICAL.fullmatch(piece)
    if match:
        arg = match["arg"]
        return FixedTerm(f"C({arg})", _column(arg), True)
    if _COLUMN.fullmatch(piece):
        return FixedTerm(_column(piece), _column(piece), False)
    return None


def _column(token):
    return token[1:-1] if token.startswith("`") else token


def arrays_formula(covariates, intercept, groups):
    """The formula recorded for a fit from arrays: ``y ~ 1 + x1 + x2 + (1|g)`` (``0 +``
    without the intercept), from the covariates' and the grouping factors' names."""
    return "y ~ " + " + ".join((["1"] if intercept else ["0"]) + list(covariates)
                               + [f"(1|{g})" for g in groups])


def required_columns(parsed, extra=()):
    """Columns the formula (and named extra columns) read, without repeats."""
    fixed_vars = [t.column for t in parse_fixed(parsed.fixed)[1]]
    slopes = [c for term in parsed.random for c in term.slopes]
    return list(dict.fromkeys([parsed.response, *fixed_vars, *slopes, *parsed.groups,
                               *[c for c in extra if c]]))

