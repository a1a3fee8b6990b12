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


def test_the_packaged_default_model_was_trained_only_on_shippable_clips():
    """scripts/train_default_model.py ships the manifest it trained on; every clip's licence must allow shipping."""
    import json
    from collections import Counter

    from sonalign.index.embedders import default_model_dir

    rows = [json.loads(line) for line in (default_model_dir() / "training_data.jsonl").open()]
    assert len(rows) > 500
    assert not [r["id"] for r in rows if not allows_shipped_weights(r["license"])]
    assert not [r["id"] for r in rows if r["source"] in ("nonverbal", "emodb")]  # CC BY-NC-ND / research-only sets
    assert Counter(r["split"] for r in rows).keys() <= {"train", "val"}  # never a test or zeroshot clip
    config = json.loads((default_model_dir() / "config.json").read_text())
    assert config["training"]["data"] == "training_data.jsonl"


def test_no_zeroshot_label_or_test_clip_of_sfx_reached_the_default_model(shared_data):
    import json

    from sonalign.index.embedders import default_model_dir

    sfx = [json.loads(line) for line in (shared_data / "sfx" / "manifest.jsonl").open()]
    held_out = {f"sfx/{r['id']}" for r in sfx if r["split"] in ("test", "zeroshot")}
    zeroshot_labels = {r["label"] for r in sfx if r["split"] == "zeroshot"}
    rows = [json.loads(line) for line in (default_model_dir() / "training_data.jsonl").open()]
    assert not held_out & {r["id"] for r in rows}
    assert not zeroshot_labels & {r["label"] for r in rows if r.get("label")}
