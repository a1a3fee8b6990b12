"""Which licences allow shipping weights trained on a clip (../shared/data/README.md's policy)."""

import pytest

from sonalign.data.licences import allows_shipped_weights, licence_options


@pytest.mark.parametrize("expression", [
    "CC0-1.0", "public-domain", "MIT", "CC-BY-3.0", "CC-BY-4.0", "CC-BY (version unstated)", "CC-BY-SA-3.0", "CC-BY-SA-4.0",
    "LAL-1.3", "GPL-2.0-or-later OR CC-BY-SA-2.0", "CC-BY-SA-3.0 or GPL-3 or GPL-2", "cc0-1.0",
])
def test_permissive_options_allow_shipping(expression):
    assert allows_shipped_weights(expression)


@pytest.mark.parametrize("expression", [
    "CC-BY-NC-ND-4.0", "CC BY-NC-ND 4.0", "CC-BY-NC-4.0", "CC-BY-ND-4.0", "CC-BY-NC-SA-3.0", "GPL-2.0-only", "GPL-3.0-or-later",
    "GPL-2.0-or-later WITH composition exception", "GFDL-1.3-only", "free for research use", "", None,
])
def test_restrictive_or_unknown_licences_do_not(expression):
    assert not allows_shipped_weights(expression)


def test_alternatives_are_split():
    assert licence_options("GPL-2.0-or-later OR CC-BY-SA-2.0") == ["GPL-2.0-or-later", "CC-BY-SA-2.0"]
    assert licence_options("CC-BY-SA-3.0 or GPL-3 or GPL-2") == ["CC-BY-SA-3.0", "GPL-3", "GPL-2"]


def test_a_mix_needs_every_part_shippable():
    assert allows_shipped_weights("CC0-1.0 AND CC-BY-3.0")
    assert not allows_shipped_weights("CC0-1.0 AND GPL-2.0-only")
    assert allows_shipped_weights("GPL-2.0-only AND CC0-1.0 OR MIT")  # OR binds loosest
