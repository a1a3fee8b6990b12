"""Which clips may train weights that sonalign ships.

A clip's ``license`` is an SPDX-like expression: one licence (``CC-BY-SA-3.0``) or alternatives
(``GPL-2.0-or-later OR CC-BY-SA-2.0``: the user may pick either). Shipped weights are a derived
work distributed to everyone, so at least one alternative must allow that without
non-commercial or no-derivatives terms and without the GPL's source obligations: CC0, public
domain, MIT, CC-BY-*, CC-BY-SA-* or LAL (Free Art). NC/ND variants, GPL-only and GFDL-only clips
are fine for evaluation, never for shipped weights (``../shared/data/README.md``).
"""

from __future__ import annotations

import re

#: Licence families whose terms allow redistributing trained weights (prefixes, case-insensitive).
SHIPPABLE = ("CC0", "PUBLIC-DOMAIN", "MIT", "CC-BY", "LAL")
_ALTERNATIVES = re.compile(r"\s+or\s+|\s*/\s*", re.IGNORECASE)
_AND = re.compile(r"\s+and\s+", re.IGNORECASE)
_RESTRICTIVE = re.compile(r"(^|[-+])(NC|ND)([-+]|$)")


def licence_options(expression: str) -> list[str]:
    """The alternatives of a licence expression, each stripped (``"A OR B"`` -> ``["A", "B"]``)."""
    return [part.strip() for part in _ALTERNATIVES.split(expression.strip()) if part.strip()]


def shippable(option: str) -> bool:
    """One licence (not an expression) allows shipping weights trained on the clip."""
    if re.search(r"\sWITH\s", option, re.IGNORECASE):  # an exception clause narrows a licence we do not list
        return False
    name = re.sub(r"\s+", "-", option.strip().upper())  # "CC BY-NC-ND 4.0" -> "CC-BY-NC-ND-4.0"
    if _RESTRICTIVE.search(name):
        return False
    return any(name == family or name.startswith(family + "-") for family in SHIPPABLE)


def allows_shipped_weights(expression: str | None) -> bool:
    """True when at least one alternative of ``expression`` is :func:`shippable` (None: unknown, False).

    An alternative ``A AND B`` (a mix of two clips) needs every part shippable."""
    return bool(expression) and any(all(shippable(part) for part in _AND.split(option)) for option in licence_options(str(expression)))


__all__ = ["SHIPPABLE", "allows_shipped_weights", "licence_options", "shippable"]
