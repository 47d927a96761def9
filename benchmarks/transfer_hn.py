"""Transfer study v3: does PGL help on head-and-neck organs at risk (OpenKBP, 242 planning CTs)?

Stages (each resumable; a finished job is reused, an interrupted one continues from its checkpoint):

``pretrain``
    The pretraining arms, run one after another through ``pgl-zoo pretrain`` with identical data,
    steps, batch, seed and network (the ``pgl-ct`` architecture, ``transfer_v3/study_card.json``):
    ``pgl`` (project defaults: local weight 1, coarsest decoder level), ``byol`` (local weight 0)
    and the diagnostic ``shuffled`` (local loss on permuted positions; shorter). Pool: the images of
    OpenKBP's training and validation patients (labels unused) plus every other real-HU CT under
    ``../shared/data/ct`` (label maps and non-HU scans are skipped by the pretraining data checks);
    OpenKBP's test patients are never in it (asserted). ``pgl-small`` is ``pgl`` on the other CTs only
    (``OTHER_CT``: ``pgl-ct``'s 12 CTs and LCTSC lung_005..007; no head and neck), so that ``pgl`` - ``pgl-small``
    measures the pool alone, where ``pgl`` - ``pgl-ct`` also differs in intensity map, spacing and steps.

``prepare``
    Every case the evaluation reads (the labelled pool: ``POOL_SIZE`` training patients drawn once
    with ``SPLIT_SEED``; the 39 test patients), on the study grid: LPS, resampled (image linear, label
    nearest) to the study spacing, cropped to the body (HU > -900, plus a margin), int16 HU and uint8
    labels; for pool cases also the voxels the probe trains on (up to ``ORGAN_SAMPLES`` per contoured
    organ and the rest background, ``SAMPLES`` in all, drawn once: every arm trains on the same voxels).

``features --arm A``
    The frozen encoder of arm A (``random``: the study architecture, seed 0; ``pgl-ct``: today's zoo
    encoder, fed with its own card's intensity map; ``byol``/``pgl``/``shuffled``/``pgl-small``: the
    pretraining runs) applied once to every prepared case: for test cases each stage's map (float16; the probe's
    linear head is applied at each stage's own resolution, :mod:`pgl_zoo.nets.probe`), for pool cases
    the stages' maps brought to the input grid at the sampled voxels (float32).

``probe --arm A``
    The frozen-encoder probe (:class:`pgl_zoo.nets.LinearProbe3d`'s head: one linear map of all stages'
    features on the input grid) fitted on K labelled pool patients, K in ``KS``, ``SUBSETS`` subsets per
    K (a function of K and the subset index only, so every arm sees the same subsets), with the marginal
    loss of :class:`pgl_zoo.finetune.losses.DiceCELoss` (uncontoured organs are unknown), then scored on
    the test patients: Dice per organ only where that organ is contoured. Each fit is one JSON record;
    finished fits are reused.

``report``
    Per K, arm and organ: mean Dice over subsets; paired differences PGL - random, PGL - BYOL,
    PGL - shuffled, PGL - pgl-ct, PGL - pgl-small (and the rest of ``COMPARISONS``) per subset with a 95 %
    bootstrap interval over subsets (none over fewer than 3), also per organ; Dice against K with interval
    bands. ``benchmarks/results/transfer_v3.{json,md}``, ``transfer_v3_probe.png`` and
    ``transfer_v3_differences.png``. ``--replicate-of EARLIER.json --name NAME``: this folder's pretraining
    arms are a second run of the earlier report's (same code, data and seed; on another CPU, whose
    floating-point differences make another run), and arms this folder did not probe are taken from the
    earlier report; adds each arm's replicate 2 - replicate 1 and both
    replicates' PGL - BYOL, paired by subset (the subset bootstrap does not cover the pretraining's own variation).

``--quick`` runs every stage on a tiny budget (pretraining: 2 steps of batch 2 per arm on two images;
probe: 3 pool and 2 test patients, K 1 and 2, 2 subsets), as tests/test_transfer_hn.py does.

Preprocessing of the study (pretraining and fine-tuning alike): LPS, 4 x 4 x 3 mm (x, y, z), HU
window [-250, 350] mapped to [0, 1]. This is an assumption made before the validation measurement
that the issue asks for (the data's own grid is 3.5-5.5 mm in-plane, 2-3.5 mm between slices; the
window is the one that learned in the issue's from-scratch measurement); the fine-tuning recipe is
measured on the validation patients and recorded in the results.

    python benchmarks/transfer_hn.py pretrain --runs /work/runs/v3 --steps 500 --threads 1
    python benchmarks/transfer_hn.py prepare --runs /work/runs/v3
    python benchmarks/transfer_hn.py features --runs /work/runs/v3 --arm random   # and every other PROBE_ARMS
    python benchmarks/transfer_hn.py probe --runs /work/runs/v3 --arm random
    python benchmarks/transfer_hn.py report --runs /work/runs/v3 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
SHARED = Path(os.environ.get("PGL_ZOO_DATA", HERE.parents[1] / "shared" / "data"))
OPENKBP = SHARED / "ct" / "openkbp_hn"
STUDY_CARD = HERE / "transfer_v3" / "study_card.json"
ORGANS = ("Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Esophagus", "Larynx", "Mandible")
# Real-HU CT beside OpenKBP (ct/not_hu is not in HU; ct/tiny_dicom has non-uniform slice spacing).
OTHER_CT = ("lctsc_lungs/imagesTr", "more", "totalseg_patient_a", "chest_dicom_series", "liver_3slice_dicom/dicom")
PRETRAIN_ARMS = {
    "pgl": ["--local-weight", "1.0"],
    "byol": ["--local-weight", "0"],
    "shuffled": ["--local-weight", "1.0", "--local-control", "shuffled"],
    "pgl-small": ["--local-weight", "1.0"],
}
# Pretrained on OTHER_CT only (the 15 real-HU CTs that are not OpenKBP's: pgl-ct's 12 and LCTSC lung_005..007,
# chest and abdomen, no head and neck): with everything else as "pgl", "pgl" - "pgl-small" is what the
# 218-volume pool adds.
SMALL_POOL_ARMS = ("pgl-small",)
PROBE_ARMS = ("random", "pgl-ct", "pgl-small", "byol", "pgl", "shuffled")
SPLIT_SEED = 2020
POOL_SIZE = 40
KS = (1, 2, 5, 10, 20)
SUBSETS = 10
SAMPLES = 8000
ORGAN_SAMPLES = 700
BODY_HU = -900.0
BODY_MARGIN = 4
FIT_STEPS = 300
FIT_LR = 0.02


@dataclass(frozen=True)
class Budget:
    """The sizes of one study run (the full one, or ``--quick``)."""

    pool: int = POOL_SIZE
    test: int | None = None  # None: all 39
    ks: tuple[int, ...] = KS
    subsets: int = SUBSETS
    samples: int = SAMPLES
    organ_samples: int = ORGAN_SAMPLES
    fit_steps: int = FIT_STEPS


QUICK = Budget(pool=3, test=2, ks=(1, 2), subsets=2, samples=600, organ_samples=60, fit_steps=30)


def openkbp_split() -> dict[str, list[str]]:
    """OpenKBP's own split of the cases here: {"train": [...], "validation": [...], "test": [...]}, sorted."""
    structures = json.loads((OPENKBP / "structures.json").read_text())
    out: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for case, info in sorted(structures.items()):
        out[info["openkbp_split"].removesuffix("-pats")].append(case)
    return out


def pool_folder(runs: Path, quick: bool = False) -> Path:
    """A folder of links to the OpenKBP training and validation images (the test patients left out; with
    ``quick`` two training images only)."""
    split = openkbp_split()
    folder = runs / "openkbp_pool"
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {f"{c}.nii.gz" for c in (split["train"][:2] if quick else split["train"] + split["validation"])}
    for name in sorted(wanted):
        link = folder / name
        if not link.exists():
            link.symlink_to(OPENKBP / "imagesTr" / name)
    present = {p.name for p in folder.iterdir()}
    test = {f"{c}.nii.gz" for c in split["test"]}
    if present & test or present != wanted:
        raise SystemExit(f"{folder}: holds other files than the training and validation images")
    return folder


def pretrain_args(runs: Path, quick: bool = False, arm: str = "pgl") -> list[str]:
    """The ``--data`` options of an arm's pretraining: the pool (``SMALL_POOL_ARMS``: ``OTHER_CT`` only;
    ``quick``: two OpenKBP training images for every arm)."""
    small = arm in SMALL_POOL_ARMS and not quick
    args = [] if small else ["--data", str(pool_folder(runs, quick))]
    for rel in () if quick else OTHER_CT:
        args += ["--data", str(SHARED / "ct" / rel)]
    return args


def run_pretraining(runs: Path, steps: int, shuffled_steps: int, batch: int, threads: int, arms: list[str],
                    checkpoint_every: int, quick: bool = False) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    for arm in arms:
        out = runs / "pretrain" / arm
        arm_steps = shuffled_steps if arm == "shuffled" else steps
        summary = out / "summary.json"
        if summary.exists() and json.loads(summary.read_text()).get("step") == arm_steps:
            print(f"{arm}: finished ({arm_steps} steps), reused", flush=True)
            continue
        cmd = [sys.executable, "-m", "pgl_zoo.cli", "pretrain", "--out", str(out)]
        if (out / "checkpoint.pt").exists():
            cmd += ["--resume", "--workers", "1"]
        else:
            cmd += [*pretrain_args(runs, quick, arm), "--model", str(STUDY_CARD), "--steps", str(arm_steps),
                    "--batch-size", str(batch), "--seed", "0", "--workers", "1",
                    "--checkpoint-every", str(checkpoint_every), "--cache-dir", str(runs / "cache"),
                    *PRETRAIN_ARMS[arm]]
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, env=env, check=True)


def study_card():
    from pgl_zoo.cards import ModelCard

    return ModelCard.from_json_file(STUDY_CARD)


def structures() -> dict[str, list[str]]:
    data = json.loads((OPENKBP / "structures.json").read_text())
    return {case: info["structures"] for case, info in data.items()}


def labelled_pool(budget: Budget) -> list[str]:
    """The training patients whose labels the probe may use, drawn once with SPLIT_SEED (in drawn order)."""
    train = openkbp_split()["train"]
    order = np.random.default_rng(SPLIT_SEED).permutation(len(train))
    return [train[i] for i in order[:budget.pool]]


def test_cases(budget: Budget) -> list[str]:
    test = openkbp_split()["test"]
    return test if budget.test is None else test[: budget.test]


def subsets(budget: Budget, k: int) -> list[list[str]]:
    """The labelled subsets of size k: a function of (pool, k, SPLIT_SEED) only, shared by every arm."""
    from transfer import labelled_subsets  # benchmarks/transfer.py (study v2): one home of the subset draw

    return labelled_subsets(labelled_pool(budget), k, budget.subsets, SPLIT_SEED)


# ---------------------------------------------------------------- prepare


def prepare_case(case: str, spacing_xyz: tuple[float, float, float]) -> dict[str, np.ndarray]:
    """A case on the study grid, cropped to the body: int16 HU image and uint8 label, (z, y, x)."""
    from pgl_zoo.cards import Preprocessing
    from pgl_zoo.imaging.read import read_image
    from pgl_zoo.preprocessing.scan import preprocess_image, preprocess_label

    prep = Preprocessing(spacing_xyz_mm=spacing_xyz, orientation="LPS", window=None, normalization="none")
    volume = preprocess_image(read_image(OPENKBP / "imagesTr" / f"{case}.nii.gz"), prep)
    label = preprocess_label(read_image(OPENKBP / "labelsTr" / f"{case}.nii.gz"), volume.grid)
    image = np.round(volume.array).astype(np.int16)
    body = np.argwhere(image > BODY_HU)
    low = np.maximum(body.min(0) - BODY_MARGIN, 0)
    high = np.minimum(body.max(0) + BODY_MARGIN + 1, image.shape)
    crop = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
    lost = int((label > 0).sum() - (label[crop] > 0).sum())
    return {"image": image[crop], "label": label[crop].astype(np.uint8), "crop_low": low, "labels_outside": lost}


def sample_voxels(label: np.ndarray, contoured: list[int], budget: Budget, seed: int) -> np.ndarray:
    """Flat indices: up to ``organ_samples`` per contoured organ (with replacement when it is smaller), the rest
    random voxels not in any contoured organ; exactly ``samples`` in all."""
    rng = np.random.default_rng(seed)
    flat = label.ravel()
    picks = []
    for organ in contoured:
        where = np.flatnonzero(flat == organ)
        if where.size:
            picks.append(rng.choice(where, size=budget.organ_samples, replace=where.size < budget.organ_samples))
    chosen = np.concatenate(picks) if picks else np.zeros(0, np.int64)
    rest = np.flatnonzero(flat == 0)
    background = rng.choice(rest, size=budget.samples - chosen.size, replace=rest.size < budget.samples)
    return np.sort(np.concatenate([chosen, background]))


def run_prepare(runs: Path, budget: Budget) -> None:
    card = study_card()
    spacing = card.preprocessing.spacing_xyz_mm
    names = {name: i + 1 for i, name in enumerate(ORGANS)}
    found = structures()
    folder = runs / "cases"
    folder.mkdir(parents=True, exist_ok=True)
    pool = labelled_pool(budget)
    for i, case in enumerate(pool + test_cases(budget)):
        path = folder / f"{case}.npz"
        if path.exists():
            continue
        data = prepare_case(case, spacing)
        if case in pool:
            contoured = [names[s] for s in found[case]]
            data["samples"] = sample_voxels(data["label"], contoured, budget, seed=SPLIT_SEED + i)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **data)
        tmp.replace(path)
        print(f"prepared {case}: {data['image'].shape}, labels outside the crop {data['labels_outside']}", flush=True)


# ---------------------------------------------------------------- features


def arm_encoder(arm: str, runs: Path):
    """(encoder in eval mode, its card): the frozen encoder an arm is probed with."""
    import torch

    import pgl_zoo
    from pgl_zoo.nets import build_encoder

    if arm == "random":
        card = study_card()
        torch.manual_seed(0)
        encoder = build_encoder(card.arch)
        encoder.card = card
    elif arm == "pgl-ct":
        encoder = pgl_zoo.load_pgl_encoder("pgl-ct")
    else:
        from pgl_zoo.pretrain.export import export_run

        run = runs / "pretrain" / arm
        summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
        if summary.get("step") != summary.get("steps") or not summary:
            raise SystemExit(f"{run}: the {arm} pretraining has not finished; run the pretrain stage first")
        folder = export_run(run, f"study-{arm}", runs / "encoders" / arm)
        encoder = pgl_zoo.load_pgl_encoder(str(folder))
    return encoder.eval(), encoder.card


def encode(encoder, card, image_hu: np.ndarray):
    """The encoder's stage maps (1, C_l, ...) of an int16 HU volume, mapped with the card's intensity map."""
    import torch

    from pgl_zoo.preprocessing.intensity import normalize_intensities

    prep = card.preprocessing
    x = normalize_intensities(image_hu.astype(np.float32), prep.window, prep.normalization)
    with torch.no_grad():
        return encoder(torch.from_numpy(np.ascontiguousarray(x))[None, None])


def upsampled_features(features, shape) -> np.ndarray:
    """All stages' maps brought to the input grid (trilinear, as LinearProbe3d does), (C, z, y, x) float32."""
    import torch
    import torch.nn.functional as F

    padded = [s * c for s, c in zip(features[-1].shape[2:], _total_stride(features, shape), strict=True)]
    maps = [f if list(f.shape[2:]) == padded else F.interpolate(f, size=padded, mode="trilinear",
                                                                   align_corners=False) for f in features]
    return torch.cat(maps, 1)[0, :, : shape[0], : shape[1], : shape[2]].numpy()


def _total_stride(features, shape) -> list[int]:
    return [round(f0 / fl) for f0, fl in zip(features[0].shape[2:], features[-1].shape[2:], strict=True)]


def run_features(runs: Path, arm: str, budget: Budget, cache_dtype=np.float16) -> Path:
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    out = runs / "features" / arm
    out.mkdir(parents=True, exist_ok=True)
    encoder, card = None, None
    pool = set(labelled_pool(budget))
    for case in labelled_pool(budget) + test_cases(budget):
        path = out / f"{case}.npz"
        if path.exists():
            continue
        if encoder is None:
            encoder, card = arm_encoder(arm, runs)
        data = np.load(runs / "cases" / f"{case}.npz")
        features = encode(encoder, card, data["image"])
        if case in pool:
            flat = upsampled_features(features, data["image"].shape).reshape(sum(f.shape[1] for f in features), -1)
            arrays = {"x": flat[:, data["samples"]].T.astype(np.float32)}
        else:
            arrays = {f"f{i}": f[0].numpy().astype(cache_dtype) for i, f in enumerate(features)}
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
    return out


# ---------------------------------------------------------------- probe


def fit_probe(xs: list[np.ndarray], ys: list[np.ndarray], masks: list[np.ndarray], widths: list[int],
              steps: int, seed: int = 0, volume_counts: np.ndarray | None = None):
    """A LinearProbe3d head fitted on sampled voxels (xs: (V, C) features on the input grid, ys: (V,) labels,
    masks: contoured classes per case) with the marginal Dice + CE loss; returns the head (nn.ModuleList).

    The voxels are sampled class-balanced (organs over-represented); with ``volume_counts`` (voxels per class
    in the training volumes) the bias is shifted by log(volume frequency / sample frequency) per class, the
    standard prior correction, so that the probe's argmax reflects the classes' real frequencies."""
    import torch

    from pgl_zoo.finetune.losses import DiceCELoss
    from pgl_zoo.nets.probe import LinearProbe3d

    torch.manual_seed(seed)
    n_classes = len(ORGANS) + 1
    x = torch.from_numpy(np.stack(xs))  # (K, V, C)
    y = torch.from_numpy(np.stack(ys).astype(np.int64))
    labelled = torch.from_numpy(np.stack(masks))
    mean, std = x.mean((0, 1)), x.std((0, 1)).clamp_min(1e-6)
    weight = torch.zeros(x.shape[2], n_classes, requires_grad=True)
    bias = torch.zeros(n_classes, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=FIT_LR)
    loss_fn = DiceCELoss()
    x = (x - mean) / std  # once: the same tensor every step (no gradient flows into the features)
    for _ in range(steps):
        logits = (x @ weight + bias).permute(0, 2, 1)
        loss = loss_fn(logits, y, labelled)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # fold the feature standardisation into the head: W' = W / std, b' = b - (mean / std) W
    with torch.no_grad():
        w = weight / std[:, None]
        b = bias - (mean / std) @ weight
        if volume_counts is not None:
            sampled = np.bincount(np.concatenate(ys).astype(np.int64), minlength=n_classes).astype(np.float64)
            shift = np.log((volume_counts + 1) / volume_counts.sum()) - np.log((sampled + 1) / sampled.sum())
            b = b + torch.from_numpy(shift).float()
    head = LinearProbe3d.__new__(LinearProbe3d)  # only the head's layout is needed
    torch.nn.Module.__init__(head)
    head.head = torch.nn.ModuleList(torch.nn.Conv3d(c, n_classes, 1, bias=(i == 0)) for i, c in enumerate(widths))
    start = 0
    with torch.no_grad():
        for i, (conv, c) in enumerate(zip(head.head, widths, strict=True)):
            conv.weight.copy_(w[start:start + c].T[:, :, None, None, None])
            if i == 0:
                conv.bias.copy_(b)
            start += c
    return head


def predict_cached(head, cached: dict[str, np.ndarray], shape) -> np.ndarray:
    """Labels (z, y, x) of a test case from its cached stage maps: the probe's own level_scores and
    upsampled_scores (pgl_zoo.nets.probe), as LinearProbe3d.forward computes them live."""
    import torch

    from pgl_zoo.nets.probe import upsampled_scores

    features = [torch.from_numpy(cached[f"f{i}"].astype(np.float32))[None] for i in range(len(head.head))]
    stride = _total_stride(features, shape)
    padded = [s * c for s, c in zip(features[-1].shape[2:], stride, strict=True)]
    with torch.no_grad():
        scores = [conv(f) for conv, f in zip(head.head, features, strict=True)]
        logits = upsampled_scores(scores, padded)[0, :, : shape[0], : shape[1], : shape[2]]
    return logits.argmax(0).numpy().astype(np.uint8)


def score(pred: np.ndarray, label: np.ndarray, contoured: list[str]) -> dict[str, float]:
    """Dice per organ, only for the organs contoured in the case (others are unknown, not scored)."""
    from pgl_zoo.metrics import dice_per_class

    dice = dice_per_class(pred, label, len(ORGANS) + 1)
    return {organ: float(dice[i + 1]) for i, organ in enumerate(ORGANS) if organ in contoured}


def run_probe(runs: Path, arm: str, budget: Budget) -> list[dict]:
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    features = runs / "features" / arm
    records_dir = runs / "probe" / arm
    records_dir.mkdir(parents=True, exist_ok=True)
    found = structures()
    names = {name: i + 1 for i, name in enumerate(ORGANS)}
    widths = None
    records = []
    tests = test_cases(budget)
    test_data: dict[str, tuple[dict[str, np.ndarray], np.ndarray]] = {}
    for k in budget.ks:
        for s, subset in enumerate(subsets(budget, k)):
            path = records_dir / f"k{k}_s{s}.json"
            if path.exists():
                records.append(json.loads(path.read_text()))
                continue
            started = time.perf_counter()
            xs, ys, masks = [], [], []
            counts = np.zeros(len(ORGANS) + 1)
            for case in subset:
                data = np.load(runs / "cases" / f"{case}.npz")
                xs.append(np.load(features / f"{case}.npz")["x"])
                ys.append(data["label"].ravel()[data["samples"]])
                counts += np.bincount(data["label"].ravel(), minlength=len(ORGANS) + 1)
                mask = np.zeros(len(ORGANS) + 1, bool)
                mask[[0] + [names[o] for o in found[case]]] = True
                masks.append(mask)
            if widths is None:
                cached = np.load(features / f"{tests[0]}.npz")
                widths = [cached[f"f{i}"].shape[0] for i in range(len(cached.files))]
            head = fit_probe(xs, ys, masks, widths, budget.fit_steps, seed=s, volume_counts=counts)
            per_case = {}
            for case in tests:
                if case not in test_data:  # read once per arm (about 1.6 GB of float16 for 39 cases)
                    with np.load(features / f"{case}.npz") as cached:
                        test_data[case] = ({name: cached[name] for name in cached.files},
                                           np.load(runs / "cases" / f"{case}.npz")["label"])
                stages, label = test_data[case]
                pred = predict_cached(head, stages, label.shape)
                per_case[case] = score(pred, label, found[case])
            record = {"arm": arm, "k": k, "subset": s, "train_cases": subset, "dice": per_case,
                      "organ_mean": organ_means(per_case), "seconds": round(time.perf_counter() - started, 2)}
            record["mean_dice"] = float(np.nanmean(list(record["organ_mean"].values())))
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(record, indent=1) + "\n")
            tmp.replace(path)
            print(f"{arm} K={k} subset {s}: mean Dice {record['mean_dice']:.3f} ({record['seconds']} s)", flush=True)
            records.append(record)
    return records


def organ_means(per_case: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean Dice per organ over the cases that contour it (NaN-free cases only)."""
    out = {}
    for organ in ORGANS:
        values = [d[organ] for d in per_case.values() if organ in d and not np.isnan(d[organ])]
        out[organ] = float(np.mean(values)) if values else float("nan")
    return out


# ---------------------------------------------------------------- report

COMPARISONS = (("pgl", "random"), ("pgl", "byol"), ("pgl", "shuffled"), ("pgl", "pgl-ct"), ("pgl", "pgl-small"),
               ("byol", "random"), ("pgl-ct", "random"), ("pgl-small", "pgl-ct"))


def paired_difference(a: dict[int, dict], b: dict[int, dict], comparison: str, k: int) -> dict | None:
    """``a`` - ``b`` over the subsets both have (each a dict subset -> probe record): mean Dice and per organ,
    each with its 95 % bootstrap interval over subsets; None when no subset is shared."""
    from transfer import bootstrap_interval  # benchmarks/transfer.py: one home of the interval

    paired = sorted(set(a) & set(b))
    if not paired:
        return None
    row = {"comparison": comparison, "k": k, "n": len(paired)}
    row["mean"], row["low"], row["high"] = bootstrap_interval([a[s]["mean_dice"] - b[s]["mean_dice"] for s in paired])
    row["organs"] = {}
    for organ in ORGANS:
        diffs = [a[s]["organ_mean"][organ] - b[s]["organ_mean"][organ] for s in paired]
        row["organs"][organ] = list(bootstrap_interval([d for d in diffs if not np.isnan(d)]))
    return row


def by_subset(records: list[dict], arm: str, k: int) -> dict[int, dict]:
    return {r["subset"]: r for r in records if r["arm"] == arm and r["k"] == k}


def summarise(records: list[dict]) -> dict:
    """Means per (arm, K) and paired differences per comparison, with 95 % bootstrap intervals over subsets."""
    from transfer import bootstrap_interval  # benchmarks/transfer.py: one home of the interval

    arms = sorted({r["arm"] for r in records}, key=lambda a: PROBE_ARMS.index(a))
    ks = sorted({r["k"] for r in records})
    table = {"means": [], "differences": []}
    for k in ks:
        for arm in arms:
            cell = list(by_subset(records, arm, k).values())
            if cell:
                mean, low, high = bootstrap_interval([r["mean_dice"] for r in cell])
                table["means"].append({"arm": arm, "k": k, "n": len(cell), "mean_dice": mean, "low": low,
                                       "high": high,
                                       "organs": {o: float(np.nanmean([r["organ_mean"][o] for r in cell]))
                                                  for o in ORGANS}})
        for a, b in COMPARISONS:
            row = paired_difference(by_subset(records, a, k), by_subset(records, b, k), f"{a} - {b}", k)
            if row is not None:
                table["differences"].append(row)
    return table


def replicate_differences(first: list[dict], second: list[dict], arms: list[str]) -> list[dict]:
    """For each arm pretrained twice (same code, data, seed; another machine): replicate 2 - replicate 1 per
    subset, and each replicate's PGL - BYOL side by side (where both arms were replicated). The bootstrap over
    subsets does not cover the pretraining run's own variation; this measures it, with one rerun."""
    rows = []
    for k in sorted({r["k"] for r in second}):
        for arm in arms:
            row = paired_difference(by_subset(second, arm, k), by_subset(first, arm, k),
                                    f"{arm}: replicate 2 - replicate 1", k)
            if row is not None:
                rows.append(row)
        if {"pgl", "byol"} <= set(arms):
            for label, records in (("replicate 1", first), ("replicate 2", second)):
                row = paired_difference(by_subset(records, "pgl", k), by_subset(records, "byol", k),
                                        f"pgl - byol, {label}", k)
                if row is not None:
                    rows.append(row)
    return rows


def run_report(runs: Path, out: Path, budget: Budget, name: str = "transfer_v3", replicate_of: Path | None = None,
               replicated: tuple[str, ...] = ()) -> Path:
    """The report of the work folder's probe records. ``replicate_of``: an earlier report's JSON, whose
    records of the ``replicated`` arms are their first pretraining run (this folder's are the second)."""
    records = [json.loads(p.read_text()) for p in sorted((runs / "probe").glob("*/k*_s*.json"))]
    first = json.loads(replicate_of.read_text())["records"] if replicate_of is not None else None
    if first is not None:  # arms not probed here (not pretrained again) are the earlier report's
        here = {r["arm"] for r in records}
        records += [r for r in first if r["arm"] not in here]
    table = summarise(records)
    if first is not None:
        table["replicates"] = replicate_differences(first, records, list(replicated))
    planned = len(budget.ks) * budget.subsets
    table["fits"] = {arm: sum(r["arm"] == arm for r in records) for arm in PROBE_ARMS}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"records": records, **table}, indent=1) + "\n")
    lines = [f"# {name}: frozen-encoder probe on OpenKBP organs at risk", "",
             "Fits finished (of " + str(planned) + " per arm: K in " + ", ".join(map(str, budget.ks)) + ", "
             + str(budget.subsets) + " subsets each): "
             + ", ".join(f"{arm} {n}" for arm, n in table["fits"].items()) + ".", "",
             "Mean Dice over the test patients (each organ only where contoured), averaged over subsets.", "",
             "| K | arm | subsets | mean Dice | " + " | ".join(ORGANS) + " |",
             "|---|---|---|---|" + "---|" * len(ORGANS)]
    for row in table["means"]:
        lines.append(f"| {row['k']} | {row['arm']} | {row['n']} | {row['mean_dice']:.3f} | "
                     + " | ".join(f"{row['organs'][o]:.3f}" for o in ORGANS) + " |")
    lines += ["", "Paired differences of mean Dice per subset, mean and 95 % bootstrap interval over subsets.", "",
              "| K | comparison | subsets | difference [95 % interval] |", "|---|---|---|---|"]
    for row in table["differences"]:
        lines.append(f"| {row['k']} | {row['comparison']} | {row['n']} | {interval_text(row)} |")
    lines += organ_difference_lines(table["differences"], with_k=True)
    if "replicates" in table:
        lines += ["", f"Replicates: {', '.join(replicated)} pretrained a second time (same code, data and seed, "
                  f"another machine; replicate 1: {replicate_of.name}). Paired by subset, mean and 95 % bootstrap "
                  "interval over subsets.", "", "| K | comparison | subsets | difference [95 % interval] |",
                  "|---|---|---|---|"]
        lines += [f"| {row['k']} | {row['comparison']} | {row['n']} | {interval_text(row)} |"
                  for row in table["replicates"]]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    _plot(table, out / f"{name}_probe.png")
    _plot_differences(table, out / f"{name}_differences.png")
    return out / f"{name}.md"


def organ_difference_lines(differences: list[dict], with_k: bool) -> list[str]:
    """The per-organ paired differences as a Markdown table (``row["organs"][organ]`` = ``[mean, low, high]``
    over the subsets where both arms scored that organ), one row per comparison (and K)."""
    head = ("| K " if with_k else "") + "| comparison | " + " | ".join(ORGANS) + " |"
    lines = ["", "Per organ: paired differences of the organ's mean Dice, mean [95 % bootstrap interval] over "
             "subsets.", "", head, "|---" * (len(ORGANS) + 1 + with_k) + "|"]
    for row in differences:
        cells = [interval_text({"mean": m, "low": lo, "high": hi, "n": row["n"]})
                 for m, lo, hi in (row["organs"][o] for o in ORGANS)]
        lines.append((f"| {row['k']} " if with_k else "") + f"| {row['comparison']} | " + " | ".join(cells) + " |")
    return lines


def _plot(table: dict, path: Path) -> None:
    def draw(ax) -> None:
        for arm in PROBE_ARMS:
            rows = [r for r in table["means"] if r["arm"] == arm]
            if rows:
                ks = [r["k"] for r in rows]
                ax.plot(ks, [r["mean_dice"] for r in rows], marker="o", label=arm)
                ax.fill_between(ks, [r["low"] for r in rows], [r["high"] for r in rows], alpha=0.2)
        ax.set_xscale("log")
        ax.set_xlabel("labelled training patients K")
        ax.set_ylabel("mean Dice (probe, test patients)\nband: 95 % bootstrap over subsets")

    write_figure(path, draw)


def _plot_differences(table: dict, path: Path) -> None:
    """PGL minus each other arm against K, the band its paired 95 % bootstrap interval (3 subsets or more)."""
    def draw(ax) -> None:
        comparisons = {r["comparison"] for r in table["differences"] if r["comparison"].startswith("pgl -")}
        for comparison in sorted(comparisons):
            rows = [r for r in table["differences"] if r["comparison"] == comparison]
            ks = [r["k"] for r in rows]
            ax.plot(ks, [r["mean"] for r in rows], marker="o", label=comparison)
            banded = [r for r in rows if r["n"] >= MIN_INTERVAL_SUBSETS]
            ax.fill_between([r["k"] for r in banded], [r["low"] for r in banded], [r["high"] for r in banded],
                            alpha=0.2)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("labelled training patients K")
        ax.set_ylabel("paired difference of mean Dice (probe)\nband: 95 % bootstrap over subsets")

    write_figure(path, draw)


def write_figure(path: Path, draw) -> None:
    """A 6 x 4 inch figure drawn by ``draw(ax)``, with its legend, saved to ``path`` (nothing when matplotlib
    is not installed: the studies' plots are optional)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    draw(ax)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


MIN_INTERVAL_SUBSETS = 3  # a bootstrap over fewer subsets is not an interval (2 values give 3 distinct means)


def interval_text(row: dict) -> str:
    """A paired difference and its 95 % bootstrap interval as the reports write it: ``+0.012 [-0.003, +0.027]``;
    over fewer than ``MIN_INTERVAL_SUBSETS`` subsets (``row["n"]``) the mean alone, saying so; ``-`` for none."""
    if row["mean"] is None or np.isnan(row["mean"]):
        return "-"
    if row.get("n", MIN_INTERVAL_SUBSETS) < MIN_INTERVAL_SUBSETS:
        return f"{row['mean']:+.3f} (n = {row['n']}: no interval)"
    return f"{row['mean']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}]"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", required=True)
    p = sub.add_parser("pretrain", help="run (or resume) the pretraining arms, one after another")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--shuffled-steps", type=int, default=250)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--arms", default=",".join(PRETRAIN_ARMS))
    p.add_argument("--checkpoint-every", type=int, default=25)
    for stage in ("prepare", "features", "probe", "report"):
        q = sub.add_parser(stage)
        if stage in ("features", "probe"):
            q.add_argument("--arm", required=True, choices=PROBE_ARMS)
        if stage == "report":
            q.add_argument("--out", type=Path, default=HERE / "results")
            q.add_argument("--name", default=None, help="report name (default transfer_v3)")
            q.add_argument("--replicate-of", type=Path, default=None,
                           help="an earlier report's JSON whose --replicated arms are their first pretraining run")
            q.add_argument("--replicated", default="pgl,byol", help="arms pretrained again (with --replicate-of)")
    for q in sub.choices.values():
        q.add_argument("--runs", type=Path, required=True, help="study work folder (run folders, cache, features)")
        q.add_argument("--quick", action="store_true", help="every branch on a tiny budget (about a minute)")
    args = parser.parse_args(argv)
    budget = QUICK if args.quick else Budget()
    if args.stage == "pretrain":
        if args.quick:
            args.steps, args.shuffled_steps, args.batch_size = 2, 2, 2
        run_pretraining(args.runs, args.steps, args.shuffled_steps, args.batch_size, args.threads,
                        args.arms.split(","), args.checkpoint_every, args.quick)
    elif args.stage == "prepare":
        run_prepare(args.runs, budget)
    elif args.stage == "features":
        run_features(args.runs, args.arm, budget)
    elif args.stage == "probe":
        run_probe(args.runs, args.arm, budget)
    elif args.stage == "report":
        name = args.name or ("transfer_v3-quick" if args.quick else "transfer_v3")
        print(run_report(args.runs, args.out, budget, name, args.replicate_of, tuple(args.replicated.split(","))))


if __name__ == "__main__":
    main()
