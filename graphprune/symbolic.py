"""Symbolic sizes: a dim is an ``int`` or a string holding a sympy expression.

Exports with dynamic axes name their sizes (``batch``, ``unk__3``,
``p2o.DynamicDimension.0``, ``s0``); shape inference turns sizes computed from
them into expressions (``8*batch``, ``seq + 1``). The IR keeps a dim as the
expression's text so it stays printable and hashable; this module parses the
text with sympy (symbols are positive integers) to decide what the graph
proves:

* :func:`dims_equal` — two sizes are equal for every value of the symbols
  (``batch*8`` and ``8*batch``; ``a`` and ``b`` are *not* equal).
* :func:`divides` — ``b / a`` is a product of symbols and positive integers,
  which is what matching reshape axes needs (``B`` fits into ``B*S``).
* :func:`evaluate` — the size at given symbol values (metrics at declared shapes).

Names exporters use are not always valid identifiers; :func:`safe_symbol`
maps them to ones that are, and the front end renames input dims with it
before inference.
"""

from __future__ import annotations

import re
from functools import lru_cache

import sympy

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def safe_symbol(name: str) -> str:
    """``name`` as a Python identifier (``p2o.DynamicDimension.0`` → ``p2o_DynamicDimension_0``)."""
    text = re.sub(r"\W", "_", name)
    return text if _IDENTIFIER.fullmatch(text) else f"s_{text}"


@lru_cache(maxsize=65536)
def expression(dim: int | str) -> sympy.Expr | None:
    """The sympy expression of a dim, or None when the text does not parse."""
    if isinstance(dim, int):
        return sympy.Integer(dim)
    try:
        names = set(_IDENTIFIER.findall(dim))
        local = {n: sympy.Symbol(n, integer=True, positive=True) for n in names
                 if n not in ("Min", "Max", "floor", "ceiling", "Mod")}
        return sympy.sympify(dim, locals=local)
    except Exception:  # sympy raises many types on text it cannot read
        return None


def is_static(dim) -> bool:
    return isinstance(dim, int)


@lru_cache(maxsize=65536)
def _equal(a: str | int, b: str | int) -> bool:
    ea, eb = expression(a), expression(b)
    if ea is None or eb is None:
        return False
    try:
        return sympy.simplify(ea - eb) == 0
    except Exception:
        return False


def dims_equal(a, b) -> bool:
    """True when the graph proves ``a == b`` for all values of the symbols."""
    if a is None or b is None:
        return False
    if a == b:
        return True
    if isinstance(a, int) and isinstance(b, int):
        return False
    return _equal(a, b)


@lru_cache(maxsize=65536)
def _quotient(a: str | int, b: str | int) -> bool:
    ea, eb = expression(a), expression(b)
    if ea is None or eb is None or ea == 0:
        return False
    q = sympy.simplify(eb / ea)
    if q == 1:
        return False
    factors = sympy.Mul.make_args(q)
    return all((f.is_Integer and f > 0) or (f.is_Symbol) or
               (f.is_Pow and f.base.is_Symbol and f.exp.is_Integer and f.exp > 0) for f in factors)


def divides(a, b) -> bool:
    """True when ``b / a`` is a product of positive integers and symbols other than 1."""
    if a is None or b is None:
        return False
    if isinstance(a, int) and isinstance(b, int):
        return a > 0 and b % a == 0 and b != a
    return _quotient(a, b)


def product(dims) -> int | str | None:
    """The product of dims as a dim (an int when every factor is static)."""
    if any(d is None for d in dims):
        return None
    if all(isinstance(d, int) for d in dims):
        out = 1
        for d in dims:
            out *= d
        return out
    exprs = [expression(d) for d in dims]
    if any(e is None for e in exprs):
        return None
    value = sympy.Mul(*exprs)
    return int(value) if value.is_Integer else str(value)


def evaluate(dim, values: dict[str, int], default: int | None = None) -> int | None:
    """The size at symbol ``values``; symbols without a value take ``default`` (None: unknown)."""
    if isinstance(dim, int):
        return dim
    if dim is None:
        return default
    if dim in values:
        return values[dim]
    expr = expression(dim)
    if expr is None:
        return default
    subs = {}
    for s in expr.free_symbols:
        if s.name in values:
            subs[s] = values[s.name]
        elif default is not None:
            subs[s] = default
        else:
            return None
    try:
        value = expr.subs(subs)
        return int(value) if value.is_number else default
    except Exception:
        return default
