"""The registered zoo entries. Pure data: no torch import (``pgl-zoo list`` stays instant).

Every value below that is not a measurement is a default of this project (see
``../shared/design/PGL_METHOD.md`` and the README): the paper states neither the spacing nor the
network widths.
"""

from __future__ import annotations

from .architecture import resenc_arch
from .cards import BUNDLED, NOT_PUBLISHED, ModelCard, Preprocessing
from .errors import UnknownModelError

# Clip range quoted (second-hand) for the paper's CT preprocessing, then z-score.
CT_WINDOW_HU = (-1024.0, 325.0)

PGL_CT_RECIPE = (
    "pgl-zoo pretrain --data CT_FOLDER --model pgl-ct --out runs/pgl-ct --steps 100000 "
    "--batch-size 8 --local-weight 1.0 ; pgl-zoo export runs/pgl-ct --name pgl-ct --out pgl-ct/"
)

_CARDS: dict[str, ModelCard] = {}


def register(card: ModelCard) -> ModelCard:
    """Add a card to the registry (names are unique)."""
    if card.name in _CARDS:
        raise ValueError(f"model {card.name!r} is already registered")
    _CARDS[card.name] = card
    return card


register(
    ModelCard(
        name="pgl-ct",
        summary="Paper-scale residual 3D U-Net encoder (widths 32-64-128-256-320) for CT, PGL pretraining.",
        status=NOT_PUBLISHED,
        arch=resenc_arch(
            [32, 64, 128, 256, 320], [1, 2, 2, 2, 2], [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
        ),
        modality="CT",
        preprocessing=Preprocessing(
            spacing_xyz_mm=(1.0, 1.0, 2.5), orientation="LPS", window=CT_WINDOW_HU, normalization="zscore"
        ),
        patch_size_zyx=(16, 96, 96),
        hub_repo_id="pgl-zoo/pgl-ct",
        training={
            "method": "PGL (global BYOL loss + prior-guided local loss)",
            "recipe": PGL_CT_RECIPE,
            "data": "none yet: the paper used 1,808 public CT scans (RibFrac, MSD tasks 8, 10, 7, 6)",
        },
        notes=(
            "No weights exist yet: the paper's authors never released theirs and this project has not "
            "trained the paper-scale model. Loading it pretrained fails; use pretrained=False for the "
            "architecture, or train it with the recipe above. Spacing and widths are project defaults."
        ),
    )
)

register(
    ModelCard(
        name="pgl-ct-tiny",
        summary="Tiny residual 3D U-Net encoder (widths 16-32-64-128) for CT, PGL-pretrained on a handful of "
        "public CT scans; bundled.",
        status=BUNDLED,
        arch=resenc_arch([16, 32, 64, 128], [1, 1, 1, 1], [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]),
        modality="CT",
        preprocessing=Preprocessing(
            spacing_xyz_mm=(2.0, 2.0, 2.0), orientation="LPS", window=CT_WINDOW_HU, normalization="zscore"
        ),
        patch_size_zyx=(32, 64, 64),
        contents=("encoder", "decoder"),
        # The digest of pgl_zoo/bundled/pgl-ct-tiny/model.safetensors; the bundled card.json must agree.
        sha256="56fafc608a7e0ccff52554434eec85d72d0eae55872c269815ad497de7d2d771",
        hub_repo_id="pgl-zoo/pgl-ct-tiny",
        license="CC BY 4.0",
        training={
            "method": "PGL (global BYOL loss + prior-guided local loss), local loss on decoder level 2",
            "steps": 300,
            "batch_size": 4,
            "data": {
                "count": 10,
                "sources": [
                    "ct/totalseg_patient_a/example_ct.nii.gz, example_ct_sm.nii.gz (CC BY 4.0)",
                    "ct/chest_dicom_series (Apache-2.0)",
                    "ct/liver_3slice_dicom/dicom (BSD-3-Clause)",
                    "ct/not_hu/CT_AVM.nii.gz, CT_pitch.nii.gz (BSD-2-Clause), rescaled to HU range",
                    "ct/not_hu/LIDC2.mha (LIDC-IDRI, CC BY 3.0), rescaled to HU range",
                    "ct/more/lidc_0314_chest.nii.gz (LIDC-IDRI, CC BY 3.0)",
                    "ct/more/pancreas_ct_cb_001_abdomen.nii.gz (TCIA Pancreatic-CT-CBCT-SEG, CC BY 4.0)",
                    "ct/more/slicer_ctchest4.nrrd (MIT)",
                ],
                "excluded": "ct/lctsc_lungs (kept for transfer studies)",
            },
            "final_losses": {"loss": 0.817, "loss_global": 0.416, "loss_local": 0.400},
            "recipe": "pgl-zoo pretrain --data ../shared/data/ct/totalseg_patient_a --data ../shared/data/ct/"
            "chest_dicom_series --data ../shared/data/ct/liver_3slice_dicom --data ../shared/data/ct/not_hu "
            "--data ../shared/data/ct/more --model pgl-ct-tiny --out runs/pgl-ct-tiny --batch-size 4 "
            "--non-hu rescale --steps 300 ; python scripts/bundle_pgl_ct_tiny.py runs/pgl-ct-tiny",
            "details": "pgl_zoo/bundled/pgl-ct-tiny/card.json holds the full configuration and data record",
        },
        notes=(
            "A small demonstration model: PGL-pretrained for 300 steps (batch 4) on 10 public CT volumes on a "
            "2-core CPU, on nnU-Net's ResidualEncoderUNet (retrained for pgl-zoo 0.2; the 0.1 weights do not fit "
            "the new networks). The file holds the encoder and the decoder; the local loss trained decoder "
            "level 2 and the levels below it, finer levels keep their initialisation. It is not the paper-scale "
            "model and has not been shown to improve segmentation (see the README's transfer study). Weights "
            "license CC BY 4.0: attribute the training scans listed."
        ),
    )
)


# The encoder that fine-tuning, the demo and the API start from when none is named. Today the best
# published zoo encoder is the bundled demonstration model; change this one line when a better encoder
# (e.g. a bundled or published ``pgl-ct``) is registered.
DEFAULT_ENCODER = "pgl-ct-tiny"


def default_encoder() -> str:
    """The zoo encoder used when none is named: the best registered encoder with weights (now "pgl-ct-tiny").

    ``pgl-zoo finetune``, ``pgl-zoo demo``, :func:`pgl_zoo.load_pgl_encoder` and
    :func:`pgl_zoo.pgl_unet3d` all take their default from here.
    """
    return DEFAULT_ENCODER


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_CARDS)


def get_card(name: str) -> ModelCard:
    """The registered card called ``name``; raises UnknownModelError listing the known names."""
    try:
        return _CARDS[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; known models: {', '.join(list_models())}"
        ) from None
