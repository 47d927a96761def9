"""Every registered model keeps the promises of its card; each test runs over the whole registry.

A model registered later is covered without editing this file. Checked per card:

* fields a user needs are filled in: summary, modality, license, citation, how it was trained and
  on which data; a pinned sha256 (and, on the Hub, a pinned commit) when it has weights; a
  measured result (``evaluation``) for a trained task model (task other than ``encoder``); classes
  and label names for a segmentation model;
* a bundled model's folder holds its weights with the pinned digest (and size), a ``card.json``
  equal to the registry card and the Hub README rendered from that card;
* loading it gives a load report that covers 100 % of the parameters of every part the card's
  ``contents`` promise, and the file holds nothing else.
"""

from __future__ import annotations

import os
import re

import pytest
from safetensors import safe_open

import pgl_zoo
from pgl_zoo.cards import BUNDLED, PUBLISHED, ModelCard
from pgl_zoo.hashing import sha256_file
from pgl_zoo.hub_readme import render_hub_readme
from pgl_zoo.nets import part_of, unique_state_dict
from pgl_zoo.sources import BUNDLED_DIR, REMOTE_ONLY, locate

NAMES = pgl_zoo.list_models()
WITH_WEIGHTS = [n for n in NAMES if pgl_zoo.get_card(n).has_weights]
BUNDLED_NAMES = [n for n in NAMES if pgl_zoo.get_card(n).status == BUNDLED]


def test_the_registry_has_bundled_weights_to_check():
    assert BUNDLED_NAMES, "no bundled model: the checks below would check nothing"


@pytest.mark.parametrize("name", NAMES)
def test_card_fields_are_complete(name):
    card = pgl_zoo.get_card(name)
    assert card.summary.strip() and card.modality.strip() and card.license.strip()
    assert card.citation.lstrip().startswith("@") and "title" in card.citation
    assert card.training.get("data"), "the card names the training data"
    if card.has_weights:
        assert re.fullmatch(r"[0-9a-f]{64}", card.sha256 or ""), "the weights' sha256 is pinned"
        if card.status == PUBLISHED:
            assert card.hub_repo_id and re.fullmatch(r"[0-9a-f]{40}", card.revision or ""), \
                "a published model pins a Hub commit, not a branch"
            assert card.size_bytes, "a published model's size is known before it is downloaded"
    else:
        assert card.sha256 is None
        assert "recipe" in card.training, "an unpublished card says how its weights would be trained"
    if card.task != "encoder":
        assert card.evaluation and card.evaluation["summary"].strip(), \
            f"{name}: a {card.task} model states its measured result (card field 'evaluation')"
    if card.task == "segmentation":
        assert card.num_classes and card.num_classes >= 2 and set(card.contents) == {"encoder", "decoder", "head"}
        assert card.label_names and set(card.label_names) == {str(i) for i in range(card.num_classes)}


@pytest.mark.parametrize("name", BUNDLED_NAMES)
def test_bundled_folder_holds_what_the_registry_pins(name):
    card = pgl_zoo.get_card(name)
    folder = BUNDLED_DIR / name
    weights = folder / card.filename
    assert weights.is_file(), f"{weights} is missing"
    assert sha256_file(weights) == card.sha256
    if card.size_bytes is not None:
        assert weights.stat().st_size == card.size_bytes
    assert ModelCard.from_json_file(folder / "card.json") == card, "bundled card.json differs from the registry"
    assert (folder / "README.md").read_text() == render_hub_readme(card), "README.md is not rendered from the card"
    assert sorted(os.listdir(folder)) == sorted([card.filename, "card.json", "README.md"])


def _fraction_loaded(net, report, part: str) -> float:
    own = {k: v.numel() for k, v in unique_state_dict(net).items() if part_of(k) == part}
    loaded = set(report.loaded)
    return sum(n for k, n in own.items() if k in loaded) / sum(own.values())


@pytest.mark.parametrize("name", WITH_WEIGHTS)
def test_loading_covers_everything_the_contents_promise(name):
    card = pgl_zoo.get_card(name)
    where = locate(card)
    if where.place == REMOTE_ONLY:
        pytest.skip(f"{name}: weights on the Hub only (the download path is tested in test_hub_http.py)")
    with safe_open(str(where.path), "pt") as handle:
        assert {part_of(k) for k in handle.keys()} == set(card.contents), "the file holds exactly its contents"
    if card.task == "segmentation":
        net, _ = pgl_zoo.load_segmentation_model(name)
    else:
        encoder = pgl_zoo.load_pgl_encoder(name)
        assert encoder.load_report.complete and encoder.load_report.encoder_fraction == 1.0
        net = pgl_zoo.pgl_unet3d(2, encoder=name)  # the decoder too, when the card's contents hold one
    report = net.load_report
    assert report.sha256_verified and report.sha256 == card.sha256 and report.complete
    assert report.ignored == [], "parts in the file that loading leaves unused"
    for part in card.contents:
        assert _fraction_loaded(net, report, part) == 1.0, f"{name}: {part} not fully loaded"
