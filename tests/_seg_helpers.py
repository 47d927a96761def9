"""Helpers shared by the tests/test_seg_*.py files: small networks saved as zoo folders, data subsets."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from pgl_zoo.cards import NOT_PUBLISHED, ModelCard, Preprocessing
from pgl_zoo.nets import build_unet, resenc_arch

# The project's real data: $PGL_ZOO_DATA (as the benchmarks read it), else ../shared/data beside the checkout.
# Every test that reads real scans takes this one path; where it is absent those tests skip with the reason.
DATA_DIR = Path(os.environ.get("PGL_ZOO_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
HIPPOCAMPUS = DATA_DIR / "mri" / "hippocampus"

# A very small residual U-Net so that CPU tests take seconds.
MICRO_ARCH = resenc_arch([8, 16, 32], [1, 1, 1], [[1, 1, 1], [2, 2, 2], [2, 2, 2]])


def write_micro_pretrain_set(root: Path) -> dict[str, Path]:
    """A micro pretraining setup for fast CPU runs: ``card.json`` (MICRO_ARCH, patch 8 x 16 x 16, native
    spacing, CT window) and two synthetic HU volumes (16 x 28 x 28, int16) in ``data/``."""
    import numpy as np
    import SimpleITK as sitk

    from pgl_zoo.registry import get_card

    card = get_card("pgl-ct-tiny").replace(
        name="micro", arch=MICRO_ARCH, patch_size_zyx=(8, 16, 16),
        preprocessing=Preprocessing(spacing_xyz_mm=None, window=(-1024.0, 325.0), normalization="zscore"))
    (root / "card.json").write_text(card.to_json())
    rng = np.random.default_rng(0)
    (root / "data").mkdir(parents=True, exist_ok=True)
    for i in range(2):
        sitk.WriteImage(sitk.GetImageFromArray((rng.normal(0, 400, (16, 28, 28)) - 300).astype(np.int16)),
                        str(root / "data" / f"case{i}.nii.gz"))
    return {"card": root / "card.json", "data": root / "data", "cache": root / "cache"}


def micro_card(name: str = "micro", spacing=None, window=None, patch=(32, 32, 32), modality="MRI") -> ModelCard:
    return ModelCard(
        name=name, summary="test network", status=NOT_PUBLISHED, arch=MICRO_ARCH, modality=modality,
        preprocessing=Preprocessing(spacing_xyz_mm=spacing, window=window, normalization="zscore"),
        patch_size_zyx=patch,
    )


def save_micro_encoder(folder: Path, seed: int = 0, **card_kwargs) -> Path:
    """A randomly initialised micro encoder saved like a zoo entry (model.safetensors + card.json)."""
    from pgl_zoo.publish import save_pretrained

    torch.manual_seed(seed)
    net = build_unet(MICRO_ARCH, num_classes=2)
    return save_pretrained(net.state_dict(), micro_card(**card_kwargs), folder)


def save_micro_segmenter(folder: Path, num_classes: int = 3, seed: int = 0, **card_kwargs) -> Path:
    """A randomly initialised micro segmentation network exported like a fine-tuned run's model."""
    from pgl_zoo.finetune.export import export_segmentation_model

    torch.manual_seed(seed)
    net = build_unet(MICRO_ARCH, num_classes=num_classes)
    card = micro_card(**card_kwargs).replace(label_names={str(i): f"c{i}" for i in range(num_classes)})
    return export_segmentation_model(net.state_dict(), card, num_classes, folder)


def micro_lung_model(folder: Path) -> Path:
    """A randomly initialised micro network exported as a 2-class lung model (CT, 6 mm, HU window
    [-1024, 325], sliding window 32 x 64 x 64 voxels (z, y, x)); its Dice is poor but real."""
    from pgl_zoo.finetune.export import export_segmentation_model
    from pgl_zoo.nets import build_unet

    torch.manual_seed(0)
    net = build_unet(MICRO_ARCH, num_classes=2)
    card = micro_card(name="micro-lungs", spacing=(6.0, 6.0, 6.0), window=(-1024.0, 325.0), patch=(32, 64, 64),
                      modality="CT").replace(label_names={"0": "background", "1": "lungs"})
    return export_segmentation_model(net.state_dict(), card, 2, folder)


def hippocampus_subset(root: Path, names: list[str]) -> Path:
    """An MSD-layout folder of symlinks to a few hippocampus cases (the data are never copied)."""
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            if not (root / sub / f"{name}.nii.gz").exists():
                os.symlink(HIPPOCAMPUS / sub / f"{name}.nii.gz", root / sub / f"{name}.nii.gz")
    return root


def first_cases(count: int) -> list[str]:
    names = sorted(p.name[: -len(".nii.gz")] for p in (HIPPOCAMPUS / "imagesTr").glob("*.nii.gz"))
    return names[:count]
