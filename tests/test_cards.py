"""Every registered card is complete and sane; cards round-trip through JSON; listing needs no torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import pgl_zoo
from pgl_zoo.arch import cumulative_strides, validate_arch
from pgl_zoo.cards import CARD_SCHEMA_VERSION, NORMALIZATIONS, STATUSES, ModelCard, Preprocessing

NAMES = pgl_zoo.list_models()


def test_registry_has_the_required_models():
    assert {"pgl-ct", "pgl-ct-tiny"} <= set(NAMES)
    assert NAMES == sorted(NAMES)


def test_the_default_encoder_is_a_registered_encoder_with_weights_and_every_default_uses_it():
    import inspect

    from pgl_zoo.api import load_pgl_encoder, pgl_unet3d
    from pgl_zoo.finetune import FinetuneConfig
    from pgl_zoo.registry import default_encoder

    card = pgl_zoo.get_card(default_encoder())
    assert card.has_weights and card.task != "segmentation" and "encoder" in card.contents
    assert inspect.signature(load_pgl_encoder).parameters["name"].default is None
    assert inspect.signature(pgl_unet3d).parameters["encoder"].default is None
    assert FinetuneConfig(out="x", num_classes=2, data="d").encoder == default_encoder()
    from pgl_zoo.cli_demo import demo_cmd

    # `pgl-zoo finetune` without --encoder uses the default; `pgl-zoo demo` names the encoder its recipe
    # was calibrated with (pgl_zoo.demo.DEMO_ENCODER), which must be a registered encoder with weights too
    from pgl_zoo.demo import DEMO_ENCODER
    from pgl_zoo.finetune.cli import finetune_cmd

    assert next(p for p in finetune_cmd.params if p.name == "encoder").default == default_encoder()
    assert next(p for p in demo_cmd.params if p.name == "encoder").default == DEMO_ENCODER
    demo_card = pgl_zoo.get_card(DEMO_ENCODER)
    assert demo_card.has_weights and demo_card.task == "encoder"
    encoder = load_pgl_encoder()  # no name: the default, from its weights (bundled: offline)
    assert encoder.card.name == default_encoder() and encoder.load_report.complete


@pytest.mark.parametrize("name", NAMES)
def test_card_schema(name):
    card = pgl_zoo.get_card(name)
    assert card.name == name
    assert card.status in STATUSES
    assert card.summary and card.modality and card.license and "xie2020pgl" in card.citation
    assert validate_arch(card.arch) == card.arch  # nnU-Net's architecture block, normalised
    kwargs = card.arch["arch_kwargs"]
    assert all(len(s) == 3 and all(v in (1, 2) for v in s) for s in kwargs["strides"])
    assert card.in_channels >= 1 and card.schema_version == CARD_SCHEMA_VERSION
    prep = card.preprocessing
    assert prep.normalization in NORMALIZATIONS
    if prep.spacing_xyz_mm is not None:
        assert len(prep.spacing_xyz_mm) == 3 and all(0.1 <= s <= 10 for s in prep.spacing_xyz_mm)
    if card.modality == "CT":
        low, high = prep.window
        assert -1200 <= low < high <= 3000
    # the patch must be divisible by the network's total stride
    total = cumulative_strides(kwargs["strides"])[-1]
    assert all(p % t == 0 for p, t in zip(card.patch_size_zyx, total, strict=False))
    assert "encoder" in card.contents  # digests, files and fields of weights: tests/test_registry_cards.py


@pytest.mark.parametrize("name", NAMES)
def test_card_json_round_trip(name):
    card = pgl_zoo.get_card(name)
    again = ModelCard.from_dict(__import__("json").loads(card.to_json()))
    assert again == card


def test_evaluation_and_size_are_optional_and_validated():
    card = pgl_zoo.get_card("pgl-ct-tiny")
    measured = card.replace(evaluation={"summary": "test value 0.5 (a fixture, not a measurement)", "cases": 3},
                            size_bytes=123)
    assert ModelCard.from_dict(json.loads(measured.to_json())) == measured
    assert measured.evaluation_summary.startswith("test value") and card.replace(evaluation=None).evaluation_summary \
        == "not measured"
    data = json.loads(card.to_json())
    del data["evaluation"], data["size_bytes"]  # a card written before these fields existed
    assert ModelCard.from_dict(data).evaluation is None and data["schema_version"] == CARD_SCHEMA_VERSION
    for bad in ({"cases": 3}, {"summary": ""}, {"summary": "two\nlines"}, "Dice 0.9"):
        with pytest.raises(ValueError, match="evaluation"):
            card.replace(evaluation=bad)
    for bad in (0, -1, 1.5, True, "12"):
        with pytest.raises(ValueError, match="size_bytes"):
            card.replace(size_bytes=bad)


def test_preprocessing_validates():
    with pytest.raises(ValueError):
        Preprocessing(normalization="percentile")
    with pytest.raises(ValueError):
        Preprocessing(window=None, normalization="minmax")


def test_unknown_model_names_the_known_ones():
    with pytest.raises(pgl_zoo.UnknownModelError, match="pgl-ct-tiny"):
        pgl_zoo.get_card("pgl-mri")


def test_list_and_info_do_not_import_torch():
    code = (
        "import sys\n"
        "from pgl_zoo.cli import main\n"
        "main(['list'])\n"
        "main(['info', 'pgl-ct'])\n"
        "import pgl_zoo; pgl_zoo.list_models(); pgl_zoo.get_card('pgl-ct')\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "pgl-ct-tiny" in result.stdout and "not yet published" in result.stdout


def test_a_misspelt_or_unknown_card_key_is_refused(tmp_path):
    data = json.loads(pgl_zoo.get_card("pgl-ct-tiny").to_json())
    data["sha265"] = data.pop("sha256")  # a typo would otherwise load the weights unverified
    path = tmp_path / "card.json"
    path.write_text(json.dumps(data))
    with pytest.raises(pgl_zoo.PglZooError, match=r"card.json: .*unknown card keys \['sha265'\]"):
        ModelCard.from_json_file(path)
    data = json.loads(pgl_zoo.get_card("pgl-ct-tiny").to_json())
    data["preprocessing"]["spacing"] = [1, 1, 1]
    with pytest.raises(ValueError, match="unknown preprocessing keys"):
        ModelCard.from_dict(data)


def test_cards_of_the_hand_written_networks_are_refused_with_the_reason():
    data = json.loads(pgl_zoo.get_card("pgl-ct-tiny").to_json())
    del data["schema_version"]
    data["arch"] = {"in_channels": 1, "widths": [16, 32], "blocks": [1, 1], "strides": [[1, 1, 1], [2, 2, 2]]}
    with pytest.raises(ValueError, match="schema_version 1 .*retrain or re-export"):
        ModelCard.from_dict(data)
    with pytest.raises(ValueError, match="filename"):
        pgl_zoo.get_card("pgl-ct-tiny").replace(filename="../../etc/passwd")


def test_registered_adds_a_card_for_the_block_only_and_restores_what_it_replaced():
    from pgl_zoo.registry import registered

    tiny = pgl_zoo.get_card("pgl-ct-tiny")
    with registered(tiny.replace(name="test-temporary")) as card:
        assert pgl_zoo.get_card("test-temporary") == card and "test-temporary" in pgl_zoo.list_models()
    assert "test-temporary" not in pgl_zoo.list_models()
    with pytest.raises(ValueError, match="already registered"), registered(tiny.replace(summary="other")):
        pass
    assert pgl_zoo.get_card("pgl-ct-tiny") == tiny
    with registered(tiny.replace(summary="other"), replace=True):
        assert pgl_zoo.get_card("pgl-ct-tiny").summary == "other"
    assert pgl_zoo.get_card("pgl-ct-tiny") == tiny and pgl_zoo.list_models() == NAMES
