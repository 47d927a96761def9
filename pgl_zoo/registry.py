"""The registered zoo entries. Pure data: no torch import (``pgl-zoo list`` stays instant).

Every value below that is not a measurement is a default of this project (see
``../shared/design/PGL_METHOD.md`` and the README): the paper states neither the spacing nor the
network widths.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .arch import resenc_arch
from .cards import BUNDLED, NOT_PUBLISHED, ModelCard, Preprocessing
from .errors import UnknownModelError

# Clip range quoted (second-hand) for the paper's CT preprocessing, then z-score.
CT_WINDOW_HU = (-1024.0, 325.0)

PGL_CT_LARGE_RECIPE = (
    "torchrun --nproc_per_node=8 -m pgl_zoo.cli pretrain --data CT_FOLDER --model pgl-ct-large "
    "--out runs/pgl-ct-large --steps 100000 --batch-size 8 ; "
    "pgl-zoo export runs/pgl-ct-large --name pgl-ct-large --decoder --out pgl-ct-large/"
)

_CARDS: dict[str, ModelCard] = {}


def register(card: ModelCard) -> ModelCard:
    """Add a card to the registry (names are unique)."""
    if card.name in _CARDS:
        raise ValueError(f"model {card.name!r} is already registered")
    _CARDS[card.name] = card
    return card


@contextmanager
def registered(card: ModelCard, replace: bool = False) -> Iterator[ModelCard]:
    """``card`` in the registry for the ``with`` block only (tests, or a session trying a card out).

    A name already registered is refused unless ``replace``; on leaving, the registry is as it was before
    (the replaced card back, or the name gone)::

        with registered(card.replace(name="my-model")):
            pgl_zoo.load_pgl_encoder("my-model")
    """
    before = _CARDS.get(card.name)
    if before is not None and not replace:
        raise ValueError(f"model {card.name!r} is already registered")
    _CARDS[card.name] = card
    try:
        yield card
    finally:
        if before is None:
            _CARDS.pop(card.name, None)
        else:
            _CARDS[card.name] = before


# pgl-ct: 5 stages (total stride 16: whole-chest context at 4 mm) narrow enough (2.4 M parameters with its
# decoder, 9.6 MB) to ship in the wheel; the transfer study v2 (benchmarks/transfer.py) trains it on CT.
PGL_CT_ARCH = resenc_arch([16, 32, 64, 96, 128], [1, 1, 1, 1, 1], [[1, 1, 1]] + [[2, 2, 2]] * 4)
PGL_CT_PREPROCESSING = Preprocessing(spacing_xyz_mm=(4.0, 4.0, 4.0), orientation="LPS", window=CT_WINDOW_HU,
                                     normalization="zscore")
PGL_CITATION_NOTE = "Weights license CC BY 4.0; attribute the training scans listed (their licenses in training.data)."
PGL_CT_SOURCES = [
    "ct/lctsc_lungs/imagesTr/lung_000..lung_004 (TCIA LCTSC, CC BY 3.0; images only, no labels)",
    "ct/more/lidc_0314_chest.nii.gz (LIDC-IDRI, CC BY 3.0)",
    "ct/more/pancreas_ct_cb_001_abdomen.nii.gz (TCIA Pancreatic-CT-CBCT-SEG, CC BY 4.0)",
    "ct/more/slicer_ctchest4.nrrd (3D Slicer sample via slicerio, MIT)",
    "ct/totalseg_patient_a/example_ct.nii.gz, example_ct_sm.nii.gz (TotalSegmentator, CC BY 4.0)",
    "ct/chest_dicom_series (ITKElastix example, Apache-2.0; 10 slices)",
    "ct/liver_3slice_dicom/dicom (dcmqi, BSD-3-Clause; 3 slices)",
]
PGL_CT_STUDY = "python benchmarks/study_data.py --out study_data && python benchmarks/transfer.py --data study_data " \
    "--device cuda --workers 14"

register(
    ModelCard(
        name="pgl-ct",
        summary="Small residual 3D U-Net encoder + decoder (widths 16-32-64-96-128) for CT at 4 mm, PGL-pretrained "
        "on 12 public CT volumes; bundled. The zoo's default encoder.",
        status=BUNDLED,
        arch=PGL_CT_ARCH,
        modality="CT",
        preprocessing=PGL_CT_PREPROCESSING,
        patch_size_zyx=(32, 64, 64),
        contents=("encoder", "decoder"),
        # Digest and size of pgl_zoo/bundled/pgl-ct/model.safetensors (scripts/bundle_model.py prints them).
        sha256="deaafd3c1d5b567404902c69d84a58d03a2e24a0d6cac769813ac8d751cc9288",
        size_bytes=9572200,
        hub_repo_id="pgl-zoo/pgl-ct",
        license="CC BY 4.0",
        training={
            "method": "PGL (global BYOL loss + prior-guided local loss on decoder level 3, weight 1)",
            "steps": 1000,
            "batch_size": 8,
            "data": {
                "count": 12,
                "sources": PGL_CT_SOURCES,
                "excluded": "the transfer study's LCTSC test cases lung_005..007; ct/not_hu (not in HU); "
                "ct/tiny_dicom (non-uniform slice spacing); label maps lying beside the scans",
            },
            "hyperparameters": {
                "optimizer": "adamw", "lr": 0.001, "weight_decay": 0.01, "warmup_steps": 50, "clip_grad": 1.0,
                "base_momentum": 0.996, "local_weight": 1.0, "local_levels": [3], "scale_range": [0.75, 1.5],
                "overlap_range": [0.3, 0.8], "local_control": "none", "rotate": False, "seed": 0,
            },
            "final_losses": {"loss": 0.604, "loss_global": 0.350, "loss_local": 0.254},
            "final_indicators": {"std_global": 0.0706, "std_local_voxels": 0.0929},
            "control": "the same run with shuffled local positions ended at local loss 0.565 (aligned: 0.254)",
            "recipe": PGL_CT_STUDY + " (variant 'pgl'; its CT encoder is this model) ; "
            "python scripts/bundle_model.py pgl-ct runs/transfer_v2/CT/encoders/pgl",
            "hardware": "one NVIDIA H200 shared by 14 concurrent study jobs, torch 2.11: 367 s. The scans were "
            "resampled to 4 mm with SimpleITK and stored as int16 HU (benchmarks/study_data.py).",
        },
        evaluation={
            "summary": "LCTSC lungs, 1 labelled case: Dice 0.871 vs 0.867 from scratch (2 subsets, no interval; "
            "study v2, incomplete). OpenKBP head-and-neck organs at risk, frozen-encoder linear probe (study v3, "
            "39 test patients, 10 subsets per K): no better than a random encoder (mean Dice minus random's, "
            "K = 1: +0.003 [-0.009, +0.016]; K = 20: -0.026 [-0.035, -0.019]), and below the same network "
            "PGL-pretrained with the study's recipe ([-250, 350] HU to [0, 1], 4 x 4 x 3 mm, 500 steps of batch 4) "
            "on 15 CTs (by 0.012 to 0.054 Dice, K = 1-20; intervals above 0 from K = 2)",
            "protocol": "v2: benchmarks/transfer.py, full fine-tuning 300 steps at 4 mm, 3 held-out LCTSC cases; "
            "v3: benchmarks/transfer_hn.py, a linear probe on the frozen encoder's features, fed this card's "
            "preprocessing, with K = 1, 2, 5, 10, 20 labelled OpenKBP training patients, paired 95 % bootstrap "
            "intervals over subsets",
            "results": "benchmarks/results/v2/transfer_v2.md; benchmarks/results/transfer_v3.md",
        },
        notes=(
            "A small model, not the paper's: 1000 PGL steps (batch 8) on 12 public CT volumes, at 4 mm. The file "
            "holds the encoder and the decoder; the local loss trained decoder level 3, finer levels keep their "
            "initialisation. Its measured transfer gain is within noise on lungs (README, transfer study v2) and "
            "nil on head-and-neck organs at risk (study v3, where a 218-volume pool did no better than 15 volumes "
            "with the same recipe, so it was not retrained on that pool); for head-and-neck targets pretrain "
            "with the study's recipe (README, study v3). "
            + PGL_CITATION_NOTE
        ),
    )
)

register(
    ModelCard(
        name="pgl-ct-large",
        summary="Paper-scale residual 3D U-Net encoder (widths 32-64-128-256-320) for CT, PGL pretraining; "
        "weights not yet published.",
        status=NOT_PUBLISHED,
        arch=resenc_arch(
            [32, 64, 128, 256, 320], [1, 2, 2, 2, 2], [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
        ),
        modality="CT",
        preprocessing=Preprocessing(
            spacing_xyz_mm=(1.0, 1.0, 2.5), orientation="LPS", window=CT_WINDOW_HU, normalization="zscore"
        ),
        patch_size_zyx=(16, 96, 96),
        hub_repo_id="pgl-zoo/pgl-ct-large",
        training={
            "method": "PGL (global BYOL loss + prior-guided local loss)",
            "recipe": PGL_CT_LARGE_RECIPE,
            "data": "none yet: the paper used 1,808 public CT scans (RibFrac, MSD tasks 8, 10, 7, 6)",
        },
        notes=(
            "No weights exist yet: the paper's authors never released theirs and this project has not "
            "trained the paper-scale model (a 2-core CPU cannot). Loading it pretrained fails; use "
            "pretrained=False for the architecture, or train it on your GPUs with the recipe above. Spacing "
            "and widths are project defaults."
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
        # Digest and size of pgl_zoo/bundled/pgl-ct-tiny/model.safetensors; the bundled card.json equals this card
        # (tests/test_registry_cards.py; scripts/bundle_model.py writes it).
        sha256="56fafc608a7e0ccff52554434eec85d72d0eae55872c269815ad497de7d2d771",
        size_bytes=5105224,
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
            "hyperparameters": {
                "optimizer": "adamw", "lr": 0.001, "weight_decay": 0.01, "warmup_steps": None, "clip_grad": 1.0,
                "base_momentum": 0.996, "local_weight": 1.0, "local_levels": [2], "scale_range": [1.1, 1.4],
                "min_overlap": 0.1, "rotate": False, "seed": 0,
            },
            "non_hu_policy": "rescale: the three 8-bit/windowed head and chest scans were mapped [min, max] -> "
            "[-1024, 325]",
            "skipped": "7 label maps lying beside the scans (detected as label maps, not used)",
            "final_losses": {"loss": 0.817, "loss_global": 0.416, "loss_local": 0.400},
            "recipe": "pgl-zoo pretrain --data ../shared/data/ct/totalseg_patient_a --data ../shared/data/ct/"
            "chest_dicom_series --data ../shared/data/ct/liver_3slice_dicom --data ../shared/data/ct/not_hu "
            "--data ../shared/data/ct/more --model pgl-ct-tiny --out runs/pgl-ct-tiny --batch-size 4 "
            "--non-hu rescale --steps 300 --crop-scale 1.1,1.4 --overlap 0.1,1.0 ; pgl-zoo export runs/pgl-ct-tiny "
            "--decoder --out EXPORT ; python scripts/bundle_model.py pgl-ct-tiny EXPORT (trained with 0.2's views: "
            "crop scale 1.1-1.4 and overlap >= 0.1 by rejection sampling, which --overlap 0.1,1.0 approximates)",
            "hardware": "2-core x86_64 CPU shared with other work, torch 2.14.1: 55 min wall time (steps 1-134 on "
            "one thread, stopped with Ctrl-C and resumed exactly with --resume on two threads)",
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


TASK_MODELS_RECIPE = "python scripts/task_models.py {task} --out runs/zoo ; python scripts/bundle_model.py {name} " \
    "runs/zoo/{name}/model"

register(
    ModelCard(
        name="pgl-lungs-ct",
        summary="Lung segmentation of chest CT (both lungs as one label), fine-tuned from pgl-ct on 4 LCTSC "
        "cases at 6 mm; bundled.",
        status=BUNDLED,
        arch=PGL_CT_ARCH,
        modality="CT",
        preprocessing=Preprocessing(spacing_xyz_mm=(6.0, 6.0, 6.0), orientation="LPS", window=CT_WINDOW_HU,
                                    normalization="zscore"),
        patch_size_zyx=(32, 64, 64),
        contents=("encoder", "decoder", "head"),
        task="segmentation",
        num_classes=2,
        label_names={"0": "background", "1": "lungs"},
        sha256="7dc1bd2011fed394cc090c0ceccc1f07257cc4dc28ec6d44b500a1f376fe4995",
        size_bytes=9574592,
        hub_repo_id="pgl-zoo/pgl-lungs-ct",
        license="CC BY 4.0",
        training={
            "method": "supervised fine-tuning (Dice + cross-entropy) from pgl-ct (encoder + decoder; new head)",
            "data": "LCTSC (TCIA Lung CT Segmentation Challenge 2017, CC BY 3.0) as in ../shared/data/ct/lctsc_lungs: "
            "train lung_000..003, validation (best epoch) lung_004, test lung_005..007",
            "steps": 300, "batch_size": 2, "patch_size_zyx": [32, 64, 64], "lr": 0.001, "seed": 0, "best_epoch": 10,
            "why_6mm": "at pgl-ct's 4 mm a 32 x 64 x 64 patch sees 256 mm in-plane and a CPU run stalled at "
            "validation Dice 0.59-0.64; at 6 mm the patch spans the whole chest",
            "recipe": TASK_MODELS_RECIPE.format(task="lungs", name="pgl-lungs-ct"),
            "hardware": "2-core x86_64 CPU shared with other work, torch 2.14.1: 31 min",
        },
        evaluation={
            "summary": "lungs Dice 0.912 on 3 held-out LCTSC cases (lung_005..007)",
            "test_dice": {"lungs": 0.912}, "validation_dice": {"lungs": 0.903},
            "protocol": "pgl-zoo segment of the original scans (1.5 x 1.5 x 3 mm), Dice against the expert "
            "labels on that grid (scripts/task_models.py)",
        },
        notes=(
            "A small CPU-trained model for demonstration and as a starting point: 4 training cases, 300 steps, "
            "6 mm. Both lungs are one label; trachea and main bronchi are not lung in the LCTSC contours. "
            "Not a clinical tool. Attribute LCTSC (CC BY 3.0) and the pgl-ct training scans."
        ),
    )
)

register(
    ModelCard(
        name="pgl-hippocampus-mri",
        summary="Hippocampus (anterior, posterior) segmentation of T1 MRI crops, fine-tuned from pgl-ct on 160 "
        "MSD Task04 cases at native 1 mm; bundled.",
        status=BUNDLED,
        arch=PGL_CT_ARCH,
        modality="MRI",
        preprocessing=Preprocessing(spacing_xyz_mm=None, orientation="LPS", window=None, normalization="zscore"),
        patch_size_zyx=(32, 48, 32),
        contents=("encoder", "decoder", "head"),
        task="segmentation",
        num_classes=3,
        label_names={"0": "background", "1": "anterior", "2": "posterior"},
        sha256="003aaea9d2f4420bc88021b8482cd61a21c95536efd60d08187df008e55fb33d",
        size_bytes=9575448,
        hub_repo_id="pgl-zoo/pgl-hippocampus-mri",
        license="CC BY-SA 4.0",
        training={
            "method": "supervised fine-tuning (Dice + cross-entropy) from pgl-ct (a CT encoder: encoder + decoder; "
            "new head), MRI z-score, no window, native spacing",
            "data": "Medical Segmentation Decathlon Task04 Hippocampus (CC BY-SA 4.0) as in "
            "../shared/data/mri/hippocampus: the transfer study's split (seed 2020): 30 test cases; of the other "
            "170, 10 for validation (best epoch) and 160 for training",
            "steps": 300, "batch_size": 4, "patch_size_zyx": [32, 48, 32], "lr": 0.001, "seed": 0, "best_epoch": 6,
            "recipe": TASK_MODELS_RECIPE.format(task="hippocampus", name="pgl-hippocampus-mri"),
            "hardware": "2-core x86_64 CPU shared with other work, torch 2.14.1: 16 min",
        },
        evaluation={
            "summary": "Dice anterior 0.842, posterior 0.851 (mean 0.847) on 30 held-out MSD hippocampus cases",
            "test_dice": {"anterior": 0.842, "posterior": 0.851}, "validation_dice": {"anterior": 0.835,
                                                                                      "posterior": 0.855},
            "protocol": "pgl-zoo segment of the test images, Dice against the manual labels (scripts/task_models.py)",
        },
        notes=(
            "A small CPU-trained model: 300 steps. Its start from a CT encoder is a zoo convenience, not a measured "
            "benefit (the transfer study v2 found none on this set's probe). Not a clinical tool. The weights derive "
            "from CC BY-SA 4.0 data and are shared alike."
        ),
    )
)


register(
    ModelCard(
        name="pgl-hn-oars-ct",
        summary="Seven head-and-neck organs at risk (brainstem, spinal cord, parotids, esophagus, larynx, mandible) "
        "of planning CT, fine-tuned on 170 OpenKBP patients with partial labels at 4 x 4 x 3 mm; bundled.",
        status=BUNDLED,
        arch=PGL_CT_ARCH,
        modality="CT",
        preprocessing=Preprocessing(spacing_xyz_mm=(4.0, 4.0, 3.0), orientation="LPS", window=(-250.0, 350.0),
                                    normalization="minmax"),
        patch_size_zyx=(48, 64, 64),
        contents=("encoder", "decoder", "head"),
        task="segmentation",
        num_classes=8,
        label_names={"0": "background", "1": "Brainstem", "2": "SpinalCord", "3": "RightParotid", "4": "LeftParotid",
                     "5": "Esophagus", "6": "Larynx", "7": "Mandible"},
        sha256="e61414d7205612ceb2c5966a760cd4d2cc4a05a5442ab001b64afb1836852b0d",
        size_bytes=9579688,
        hub_repo_id="pgl-zoo/pgl-hn-oars-ct",
        license="research use only: trained on OpenKBP (repository MIT; its CTs come from TCIA head-and-neck "
        "collections whose licences were not verified here); name the source and cite Babier et al. 2021",
        training={
            "method": "supervised fine-tuning (Dice + cross-entropy, marginal over each patient's uncontoured organs) "
            "of the whole network from the transfer study v3's pgl encoder (encoder and decoder; new head); "
            "foreground patches draw the organ first (nnU-Net's oversampling)",
            "initialisation": "transfer study v3 arm pgl: PGL pretraining (project defaults) of the pgl-ct network, "
            "500 steps of batch 4, 32 x 64 x 64 views at 4 x 4 x 3 mm and [-250, 350] HU to [0, 1], on 218 CT volumes "
            "(the images of OpenKBP's 170 training and 33 validation patients, labels unused, and 15 other public "
            "CTs; OpenKBP's test patients never in it)",
            "data": "OpenKBP (AAPM 2020 knowledge-based planning challenge; Babier et al., Med Phys 48:5549, 2021) "
            "as in ../shared/data/ct/openkbp_hn: OpenKBP's own split, training 170 patients, validation 33 (best "
            "epoch), test 39; organs partially contoured (structures.json), an uncontoured organ unknown, not "
            "background",
            "steps": 2400, "batch_size": 2, "patch_size_zyx": [48, 64, 64], "lr": 0.001, "seed": 0, "best_epoch": 8,
            "recipe": "python benchmarks/transfer_hn.py pretrain --runs runs/v3 --arms pgl ; pgl-zoo export "
            "runs/v3/pretrain/pgl --name study-pgl --out runs/v3/encoders/pgl ; python scripts/task_models.py hn-oars "
            "--out runs/zoo --encoder runs/v3/encoders/pgl --schedule long ; python scripts/bundle_model.py "
            "pgl-hn-oars-ct runs/zoo/pgl-hn-oars-ct/long/model",
            "hardware": "2-core x86_64 CPU, torch 2.14.1: 94 min (validation on 33 patients every 300 steps included)",
        },
        evaluation={
            "summary": "mean Dice 0.620 over the seven organs on OpenKBP's 39 test patients (brainstem 0.74, spinal "
            "cord 0.68, parotids 0.75 / 0.74, esophagus 0.00, larynx 0.61, mandible 0.82), each organ only on the "
            "patients that contour it; the esophagus was never learned",
            "test_dice": {"Brainstem": 0.743, "SpinalCord": 0.675, "RightParotid": 0.751, "LeftParotid": 0.744,
                          "Esophagus": 0.0, "Larynx": 0.613, "Mandible": 0.816},
            "test_mean_dice": 0.620,
            "test_cases_per_organ": {"Brainstem": 33, "SpinalCord": 38, "RightParotid": 39, "LeftParotid": 39,
                                     "Esophagus": 13, "Larynx": 14, "Mandible": 26},
            "test_hd95_mm": {"Brainstem": 7.9, "SpinalCord": 30.2, "RightParotid": 7.8, "LeftParotid": 7.8,
                             "Esophagus": 167.3, "Larynx": 15.4, "Mandible": 13.3},
            "test_hd95_cases_per_organ": {"Brainstem": 33, "SpinalCord": 38, "RightParotid": 39, "LeftParotid": 39,
                                          "Esophagus": 7, "Larynx": 14, "Mandible": 26},
            "validation_dice": {"Brainstem": 0.681, "SpinalCord": 0.638, "RightParotid": 0.665, "LeftParotid": 0.693,
                                "Esophagus": 0.0, "Larynx": 0.57, "Mandible": 0.812},
            "validation_mean_dice_by_step": {"300": 0.112, "600": 0.304, "900": 0.444, "1200": 0.545, "1500": 0.561,
                                             "1800": 0.575, "2100": 0.580, "2400": 0.580},
            "sample_cases_dice": {
                "hn_247": {"Brainstem": 0.785, "SpinalCord": 0.781, "RightParotid": 0.846, "LeftParotid": 0.832,
                           "Esophagus": 0.0, "Larynx": 0.6, "Mandible": 0.761},
                "hn_286": {"Brainstem": 0.833, "SpinalCord": 0.675, "RightParotid": 0.711, "LeftParotid": 0.737,
                           "Esophagus": 0.0, "Larynx": 0.728, "Mandible": 0.813},
            },
            "protocol": "pgl-zoo segment of the 39 test CTs on their original grid (3.5-5.5 mm in-plane, 2-3.5 mm "
            "slices), then pgl-zoo evaluate --labelled-classes structures.json --hd95: Dice per organ over the "
            "patients that contour it (test_cases_per_organ); HD95 (mm) over those where the model also found the "
            "organ (test_hd95_cases_per_organ); means over patients (scripts/task_models.py hn-oars --schedule long)",
            "shorter_schedule": "300 steps (6 x 50, the other task models' schedule; before the class-first sampler): "
            "test mean Dice 0.047, only the mandible learned (0.33)",
        },
        notes=(
            "A CPU-trained model: 2,400 steps of batch 2 (nnU-Net's default schedule is 250,000). The validation "
            "curve rose from 0.11 (step 300) to 0.55 (step 1,200) and flattened at 0.58 as the learning rate decayed "
            "to 0 (steps 2,100-2,400): a longer schedule, not more steps at the end of this one, is what would raise "
            "it, by an amount not measured. The esophagus (contoured in 13 of the 39 test patients, 2.5 % of organ "
            "voxels) stayed at Dice 0 at every validation: do not use its output. Resolution: OpenKBP's CTs are "
            "3.5-5.5 mm in-plane and the model works at 4 x 4 x 3 mm; a 1 mm CT is resampled to that grid and the "
            "labels back to the input's grid (nearest), so contours come in 3-4 mm steps and thin organs (spinal cord, "
            "esophagus) lose most; a model for 1 mm contours needs training data at 1 mm. Trained and tested on one "
            "challenge's patients (OpenKBP, from TCIA head-and-neck collections); other scanners, protocols and "
            "contouring guidelines are untested. Research use only; not a clinical tool: every contour needs review."
        ),
    )
)


# The encoder that fine-tuning, the demo and the API start from when none is named: the bundled pgl-ct
# (its transfer result is the study v2's; pgl-ct-tiny has none). Change this one line for a better encoder.
DEFAULT_ENCODER = "pgl-ct"


def default_encoder() -> str:
    """The zoo encoder used when none is named: the best registered encoder with weights (now "pgl-ct").

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
        from .suggest import did_you_mean

        raise UnknownModelError(
            f"unknown model {name!r}{did_you_mean(str(name), list_models())}; known models: {', '.join(list_models())}"
        ) from None
