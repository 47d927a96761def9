"""Transfer study v2: does PGL's local loss help, under views that give it something to learn?

Two targets, each with a fixed test split (``benchmarks/study_data.py`` prepares the arrays):

* CT: the 8 LCTSC chest CTs with expert lung labels, at 4 mm; test cases lung_005..007; the
  labelled subsets are drawn from lung_000..004. Pretraining pool: every real-HU CT volume under
  ``../shared/data/ct`` except the test cases (the manifest lists them).
* MRI: MSD hippocampus T1 at native 1 mm; 30 test cases (seeded); subsets and pool from the other 170.

Pretraining variants (one run each per target, same steps, batch, network and seed):
``byol`` (local weight 0), ``pgl`` (the project default: weight 1, coarsest decoder level, crop
scale 0.75-1.5, overlap 0.3-0.8), the ablation ``pgl-w0.5``, ``pgl-w2``, ``pgl-l2`` (two
coarsest levels), ``pgl-lall`` (all levels), ``pgl-near`` (the paper's quoted near-coincident
views: scale 1.1-1.4, overlap 0.6-1.0), and the control ``pgl-shuffled`` (local loss on shuffled
positions; not a candidate).

Selection (no test data): each candidate's encoder is probed (frozen encoder, new decoder and
head) on ``SELECT_K`` labelled training cases in 2 subsets, scored on the remaining training cases;
the best mean Dice is ``best`` (if that is ``pgl`` itself, ``best`` is not run twice).

Evaluation on the test cases, for K labelled cases in {1, 2, 4} (CT) / {1, 2, 5} (MRI), 5 different
labelled subsets per K (seed = subset index, shared by all arms so differences are paired):

* full fine-tuning: ``scratch``, ``byol`` (encoder), ``pgl`` (encoder + decoder), ``pgl:enc``
  (encoder only), ``best`` (encoder + decoder);
* frozen-encoder probe: ``scratch`` (random frozen encoder), ``byol``, ``pgl``, ``best``.

Dice is read after the last step (no selection on the test set); the per-epoch test Dice gives the
learning curves. Reported per arm and K: mean Dice and the paired difference to scratch and to BYOL
with a 95 % percentile bootstrap interval over the subsets (10,000 resamples).

Jobs run in parallel worker processes (``--workers``; each with ``--threads`` threads) on
``--device``; every finished job is a JSON record under ``--work``, so a rerun only does what is
missing. ``--deadline-min`` stops taking new jobs after that many minutes (the tables then say
how many subsets each cell has). Output: ``--out/transfer_v2{-quick}.json``, ``.md`` and
``_curves.png``.

    python benchmarks/study_data.py --out study_data          # once, reads ../shared/data (SimpleITK)
    python benchmarks/transfer.py --data study_data --device cuda --workers 12
    python benchmarks/transfer.py --data study_data --quick   # every path, tiny budget (~1 min on CPU)
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import shlex
import sys
import time
import traceback
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

VARIANTS: dict[str, dict] = {
    "byol": {"local_weight": 0.0},
    "pgl": {"local_weight": 1.0},
    "pgl-w0.5": {"local_weight": 0.5},
    "pgl-w2": {"local_weight": 2.0},
    "pgl-l2": {"local_weight": 1.0, "levels": "two"},
    "pgl-lall": {"local_weight": 1.0, "levels": "all"},
    "pgl-near": {"local_weight": 1.0, "scale_range": (1.1, 1.4), "overlap_range": (0.6, 1.0)},
    "pgl-shuffled": {"local_weight": 1.0, "local_control": "shuffled"},
}
CANDIDATES = ("pgl", "pgl-w0.5", "pgl-w2", "pgl-l2", "pgl-lall", "pgl-near")
# --quick keeps one variant per code path: BYOL, PGL, several levels, other views, the control
QUICK_VARIANTS = ("byol", "pgl", "pgl-l2", "pgl-near", "pgl-shuffled")
SELECT_PROBES = (*CANDIDATES, "byol", "pgl-shuffled")
FULL_ARMS = ("scratch", "byol", "pgl", "pgl:enc", "best")
PROBE_ARMS = ("scratch", "byol", "pgl", "best")
SUBSET_SEED = 7
QUICK_CROP = (32, 48, 32)  # (z, y, x) voxels of every volume in --quick mode
BOOTSTRAP = 10_000


@dataclass
class Target:
    """One study target: its networks, patches, budgets and labelled-case counts."""

    modality: str
    arch: dict
    pretrain_patch: tuple[int, int, int]
    pretrain_batch: int
    pretrain_steps: int
    finetune_patch: tuple[int, int, int]
    finetune_batch: int
    epochs: int
    steps_per_epoch: int
    ks: tuple[int, ...]
    select_k: int
    subsets: int = 5
    max_val: int = 20
    num_classes: int = 2
    label_names: dict = field(default_factory=dict)


def targets(quick: bool) -> dict[str, Target]:
    import pgl_zoo
    from pgl_zoo.registry import PGL_CT_ARCH

    # CT: pgl-ct's network (the study's CT encoder 'pgl' is that model); MRI: pgl-ct-tiny's 4 stages
    # (hippocampus crops are 35 x 51 x 35 voxels).
    ct_arch, mri_arch = PGL_CT_ARCH, pgl_zoo.get_card("pgl-ct-tiny").arch
    out = {
        "CT": Target("CT", ct_arch, (32, 64, 64), 8, 1000, (48, 96, 96), 2, 6, 50, (1, 2, 4), 2, num_classes=2,
                     label_names={"0": "background", "1": "lungs"}),
        "MRI": Target("MRI", mri_arch, (16, 24, 16), 16, 1000, (32, 48, 32), 4, 6, 40, (1, 2, 5), 5, num_classes=3,
                      label_names={"0": "background", "1": "anterior", "2": "posterior"}),
    }
    if quick:
        for t in out.values():
            t.pretrain_steps, t.pretrain_batch, t.epochs, t.steps_per_epoch, t.subsets, t.max_val = 2, 2, 2, 1, 1, 1
            t.finetune_batch, t.ks, t.select_k = 1, (2,), 1
        out["CT"].pretrain_patch, out["CT"].finetune_patch = (16, 32, 32), (16, 32, 32)
    return out


def local_levels(spec: str | None, n_stages: int) -> tuple[int, ...] | None:
    """Decoder levels of a variant: None (the default, coarsest), 'two' coarsest, or 'all'."""
    coarsest = n_stages - 2
    return {None: None, "two": (coarsest - 1, coarsest), "all": tuple(range(coarsest + 1))}[spec]


def labelled_subsets(names: list[str], k: int, count: int, seed: int) -> list[list[str]]:
    """``count`` different subsets of ``k`` names (fewer if fewer exist), drawn with ``seed``."""
    rng = np.random.default_rng([seed, k])
    if math.comb(len(names), k) <= 2000:
        combos = list(itertools.combinations(names, k))
        order = rng.permutation(len(combos))
        return [list(combos[i]) for i in order[:count]]
    seen: list[list[str]] = []
    while len(seen) < count:
        pick = sorted(rng.choice(len(names), size=k, replace=False).tolist())
        subset = [names[i] for i in pick]
        if subset not in seen:
            seen.append(subset)
    return seen


# ---------------------------------------------------------------- worker side (one process per worker)
_DATA: dict[str, dict] = {}
_SETTINGS: dict = {}


def _init_worker(settings: dict) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(settings["threads"]))
    import torch

    torch.set_num_threads(settings["threads"])
    _SETTINGS.update(settings)
    _ensure_simpleitk_importable()


def _ensure_simpleitk_importable() -> None:
    """The study feeds arrays and never reads a file, but pgl_zoo imports SimpleITK at module level.
    On a machine without it (the GPU machine's image has none and the wheel is too large to carry),
    an empty placeholder module satisfies those imports; any real use would fail loudly.
    ``PGL_STUDY_NO_SIMPLEITK=1`` forces this path where SimpleITK is installed."""
    try:
        if os.environ.get("PGL_STUDY_NO_SIMPLEITK"):  # take the GPU machine's path here (the quick test does)
            raise ImportError
        import SimpleITK  # noqa: F401
    except ImportError:
        import types

        sys.modules["SimpleITK"] = types.ModuleType("SimpleITK")


def _data(modality: str) -> dict:
    if modality not in _DATA:
        from study_data import load_study_data

        data = load_study_data(Path(_SETTINGS["data"]), modality)
        if _SETTINGS["quick"]:  # small centre crops: every path runs in about a minute on a CPU
            def crop(a):
                starts = [max(0, (n - c) // 2) for n, c in zip(a.shape, QUICK_CROP, strict=True)]
                return np.ascontiguousarray(a[tuple(slice(s, s + c) for s, c in zip(starts, QUICK_CROP, strict=True))])

            for split in ("train", "test"):
                data[split] = {n: (crop(i), crop(lab)) for n, (i, lab) in data[split].items()}
            data["pool"] = [crop(v) for v in data["pool"][:6]]
        _DATA[modality] = data
    return _DATA[modality]


def _card_file(target: Target, work: Path) -> Path:
    import pgl_zoo
    from pgl_zoo.cards import Preprocessing

    manifest = _data(target.modality)["manifest"]
    spacing = tuple(manifest["spacing_xyz_mm"]) if manifest["spacing_xyz_mm"] else None
    card = pgl_zoo.get_card("pgl-ct-tiny").replace(
        name=f"study-{target.modality.lower()}", arch=target.arch, modality=target.modality,
        summary=f"Transfer-study network ({target.modality}).", status="not yet published",
        preprocessing=Preprocessing(spacing_xyz_mm=spacing, orientation="LPS",
                                    window=tuple(manifest["window"]) if manifest["window"] else None,
                                    normalization=manifest["normalization"]),
        patch_size_zyx=target.pretrain_patch, sha256=None, training={"recipe": "python benchmarks/transfer.py"},
        notes="Used by benchmarks/transfer.py only.",
    )
    path = work / target.modality / "card.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(card.to_json())
    os.replace(tmp, path)
    return path


def run_job(job: dict) -> dict:
    """Run one job (pretraining or fine-tuning) unless its record exists; returns the record."""
    record_path = Path(job["record"])
    if record_path.is_file():
        return json.loads(record_path.read_text())
    if time.time() > _SETTINGS["deadline"]:
        return {**job, "skipped": "deadline"}
    started = time.perf_counter()
    try:
        record = _pretrain_job(job) if job["kind"] == "pretrain" else _finetune_job(job)
    except Exception as exc:  # a failed job is recorded, the study goes on
        return {**job, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
    record = {**job, **record, "wall_s": round(time.perf_counter() - started, 1)}
    tmp = record_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=float))
    os.replace(tmp, record_path)
    return record


def _pretrain_job(job: dict) -> dict:
    from pgl_zoo.pretrain import PretrainConfig, export_run, pretrain
    from pgl_zoo.pretrain.data import PretrainVolume

    target = targets(_SETTINGS["quick"])[job["modality"]]
    work = Path(_SETTINGS["work"])
    data = _data(target.modality)
    card = _card_file(target, work)
    variant = VARIANTS[job["variant"]]
    run = work / target.modality / "pretrain" / job["variant"]
    volumes = [PretrainVolume(f"pool[{i}]", None, tuple(v.shape), array=v) for i, v in enumerate(data["pool"])]
    cfg = PretrainConfig(
        data=[s for s in data["manifest"]["pool_sources"]], out=str(run), model=str(card),
        patch_size=target.pretrain_patch, batch_size=target.pretrain_batch, steps=target.pretrain_steps,
        local_weight=variant["local_weight"], local_levels=local_levels(variant.get("levels"), len(target.arch[
            "arch_kwargs"]["features_per_stage"])),
        scale_range=variant.get("scale_range", PretrainConfig.scale_range),
        overlap_range=variant.get("overlap_range", PretrainConfig.overlap_range),
        local_control=variant.get("local_control", "none"), seed=0, workers=0,
        checkpoint_every=max(100, target.pretrain_steps // 5), resume=(run / "checkpoint.pt").is_file(),
        device=_SETTINGS["device"], log_every=max(1, target.pretrain_steps // 200),
    )
    result = pretrain(cfg, volumes=volumes)
    exported = work / target.modality / "encoders" / job["variant"]
    export_run(run, f"study-{target.modality.lower()}-{job['variant']}", exported,
               include_decoder=variant["local_weight"] > 0, overwrite=True)
    summary = json.loads((run / "summary.json").read_text())
    return {"encoder": str(exported), "final_losses": result.final_losses,
            "final_indicators": summary.get("final_indicators"), "views_mean": summary.get("views_mean")}


def _finetune_job(job: dict) -> dict:
    from pgl_zoo.finetune import FinetuneConfig, finetune
    from pgl_zoo.finetune.data import CaseArrays

    target = targets(_SETTINGS["quick"])[job["modality"]]
    work = Path(_SETTINGS["work"])
    data = _data(target.modality)
    card = _card_file(target, work)
    pairs = {**data["train"], **data["test"]}
    cases = [CaseArrays(n, *pairs[n]) for n in job["train"] + job["val"]]
    run = work / target.modality / "finetune" / job["id"]
    encoder = job.get("encoder")
    epochs = target.epochs
    result = finetune(FinetuneConfig(
        out=run, num_classes=target.num_classes, cases=cases, train_cases=job["train"], val_cases=job["val"],
        encoder=encoder, arch_from=str(card), init=job["init"], label_names=target.label_names,
        patch_size_zyx=target.finetune_patch, epochs=epochs, steps_per_epoch=target.steps_per_epoch,
        batch_size=target.finetune_batch, freeze_encoder_epochs=epochs if job["mode"] == "probe" else 0,
        seed=job["seed"], overlap=0.25, progress=False, device=_SETTINGS["device"], overwrite=True,
        resume=(run / "checkpoints" / "last.pt").is_file(),
    ))
    curve = [{"step": h["step"], "dice": h["val_mean_dice"]} for h in result.history]
    return {"dice": result.final_dice, "mean_dice": result.final_mean_dice, "curve": curve}


# ---------------------------------------------------------------- scheduling and analysis (main process)
def _job(kind: str, work: Path, modality: str, job_id: str, **fields) -> dict:
    record = work / modality / "records" / f"{job_id}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    return {"kind": kind, "modality": modality, "id": job_id, "record": str(record), **fields}


def _run_all(pool: ProcessPoolExecutor, jobs: list[dict], log) -> list[dict]:
    futures = {pool.submit(run_job, j): j for j in jobs}
    records = []
    for future in as_completed(futures):
        record = future.result()
        records.append(record)
        status = record.get("error") or record.get("skipped") or (
            f"Dice {record['mean_dice']:.3f}" if "mean_dice" in record else f"losses {record.get('final_losses')}")
        log(f"[{time.strftime('%H:%M:%S')}] {record['modality']} {record['id']}: {status}")
    return records


def _finetune_jobs(work: Path, target: Target, manifest: dict, encoders: dict[str, str], best: str) -> list[dict]:
    """The evaluation jobs, ordered subset by subset so that a deadline leaves complete paired sets."""
    jobs = []
    train = manifest["train"]
    for j in range(target.subsets):
        for k in target.ks:
            subsets = labelled_subsets(train, k, target.subsets, SUBSET_SEED)
            if j >= len(subsets):
                continue
            for mode, arms in (("full", FULL_ARMS), ("probe", PROBE_ARMS)):
                for arm in arms:
                    if arm == "best" and best == "pgl":
                        continue
                    variant = {"scratch": None, "byol": "byol", "pgl": "pgl", "pgl:enc": "pgl", "best": best}[arm]
                    init = "encoder" if arm in ("byol", "pgl:enc") or mode == "probe" else "encoder+decoder"
                    jobs.append(_job("finetune", work, target.modality, f"{mode}-{arm.replace(':', '_')}-k{k}-s{j}",
                                     arm=arm, variant=variant, mode=mode, k=k, subset=j, seed=j, train=subsets[j],
                                     val=manifest["test"], init=init, purpose="test",
                                     encoder=encoders.get(variant) if variant else None))
    return jobs


def _selection_jobs(work: Path, target: Target, manifest: dict, encoders: dict[str, str]) -> list[dict]:
    train = manifest["train"]
    jobs = []
    for j, subset in enumerate(labelled_subsets(train, target.select_k, min(2, target.subsets), SUBSET_SEED + 1)):
        val = [n for n in train if n not in subset][: target.max_val]
        for variant in (v for v in SELECT_PROBES if v in encoders):
            jobs.append(_job("finetune", work, target.modality, f"select-{variant}-s{j}", arm=variant, variant=variant,
                             mode="probe", k=target.select_k, subset=j, seed=j, train=subset, val=val, init="encoder",
                             purpose="selection", encoder=encoders[variant]))
    return jobs


def choose_best(records: list[dict]) -> tuple[str, dict[str, float]]:
    """The candidate with the highest mean probe Dice on the selection subsets (ties: the default)."""
    scores = {}
    for variant in SELECT_PROBES:
        values = [r["mean_dice"] for r in records if r.get("arm") == variant and "mean_dice" in r]
        if values:
            scores[variant] = float(np.mean(values))
    ranked = sorted((v for v in CANDIDATES if v in scores and not math.isnan(scores[v])),
                    key=lambda v: (-scores[v], v != "pgl"))
    return (ranked[0] if ranked else "pgl"), scores


def bootstrap_interval(diffs: list[float], seed: int = 0) -> tuple[float, float, float]:
    """Mean of the paired differences and its 95 % percentile bootstrap interval over subsets."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(BOOTSTRAP, d.size))].mean(axis=1)
    return float(d.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def two_level_interval(a: np.ndarray, b: np.ndarray, seed: int = 0, chunk: int = 1000,
                       resample_subsets: bool = True) -> dict:
    """Paired difference of mean Dice ``a - b`` with a 95 % two-level percentile bootstrap: the training
    subsets resampled, then the test patients within each drawn subset (the same patients for both arms).
    ``resample_subsets=False`` keeps the subsets as they are and resamples the test patients alone (what
    fewer than three subsets allow: a bootstrap over two values has three distinct means).

    ``a`` and ``b``: Dice of shape (subsets, patients, organs), NaN where the organ was not contoured
    (not scored). The statistic is the evaluation's: per organ the mean over the patients who have it,
    then the mean over organs, averaged over subsets. So the interval counts the test patients' sampling
    as well as the training subsets'; with one subset it is a bootstrap over test patients alone. Neither
    level samples the training run's own randomness beyond what differs between subsets.
    Returns ``{"mean", "low", "high", "organs": [[mean, low, high] per organ]}`` (NaN where no patient
    of any subset has the organ)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"two_level_interval: shapes {a.shape} and {b.shape}, "
                         "expected equal (subsets, patients, organs)")
    # both arms are scored on the same contours; a NaN in either (a missing score) drops the pair
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = np.where(keep, a, np.nan), np.where(keep, b, np.nan)

    def organ_difference(x: np.ndarray, y: np.ndarray) -> np.ndarray:  # (..., subsets, patients, organs)
        with warnings.catch_warnings():  # an organ none of the drawn patients has: NaN, skipped by nanmean
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(np.nanmean(x, axis=-2) - np.nanmean(y, axis=-2), axis=-2)  # (..., organs)

    observed = organ_difference(a, b)
    rng = np.random.default_rng(seed)
    n_sub, n_pat, _ = a.shape
    draws = []
    for start in range(0, BOOTSTRAP, chunk):
        size = min(chunk, BOOTSTRAP - start)
        subsets = (rng.integers(0, n_sub, size=(size, n_sub, 1)) if resample_subsets
                   else np.broadcast_to(np.arange(n_sub)[None, :, None], (size, n_sub, 1)))
        patients = rng.integers(0, n_pat, size=(size, n_sub, n_pat))
        draws.append(organ_difference(a[subsets, patients], b[subsets, patients]))
    draws = np.concatenate(draws)  # (BOOTSTRAP, organs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        overall = np.nanmean(draws, axis=1)
        organs = [[float(observed[o]), float(np.nanpercentile(draws[:, o], 2.5)),
                   float(np.nanpercentile(draws[:, o], 97.5))] for o in range(observed.size)]
    return {"mean": float(np.nanmean(observed)), "low": float(np.percentile(overall, 2.5)),
            "high": float(np.percentile(overall, 97.5)), "organs": organs}


def summarise(records: list[dict]) -> list[dict]:
    """One row per (modality, mode, K, arm): mean Dice and paired differences to scratch and BYOL."""
    rows = []
    tests = [r for r in records if r.get("purpose") == "test" and "mean_dice" in r]
    keys = sorted({(r["modality"], r["mode"], r["k"]) for r in tests})
    for modality, mode, k in keys:
        cell = [r for r in tests if (r["modality"], r["mode"], r["k"]) == (modality, mode, k)]
        by_arm = {}
        for r in cell:
            by_arm.setdefault(r["arm"], {})[r["subset"]] = r["mean_dice"]
        order = {a: i for i, a in enumerate(FULL_ARMS)}
        for arm, values in sorted(by_arm.items(), key=lambda kv: order.get(kv[0], len(order))):
            row = {"modality": modality, "mode": mode, "k": k, "arm": arm, "n": len(values),
                   "mean_dice": float(np.mean(list(values.values())))}
            for ref in ("scratch", "byol"):
                common = sorted(set(values) & set(by_arm.get(ref, {})))
                if arm != ref and common:
                    row[f"vs_{ref}"] = bootstrap_interval([values[s] - by_arm[ref][s] for s in common])
            rows.append(row)
    return rows


MIN_SUBSETS_FOR_INTERVAL = 3  # a bootstrap over fewer subsets gives no meaningful interval


def _fmt_diff(value, n: int) -> str:
    if not value:
        return ""
    mean, lo, hi = value
    if n < MIN_SUBSETS_FOR_INTERVAL:
        return f"{mean:+.3f} (no interval: {n} subset{'s' if n > 1 else ''})"
    mark = " *" if lo > 0 or hi < 0 else ""
    return f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]{mark}"


def write_report(meta: dict, rows: list[dict], pretraining: list[dict], selection: dict, path: Path) -> str:
    lines = ["| target | evaluation | K | arm | subsets | mean Dice | vs scratch [95 % CI] | vs BYOL [95 % CI] |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['modality']} | {r['mode']} | {r['k']} | {r['arm']} | {r['n']} | {r['mean_dice']:.3f} | "
                     f"{_fmt_diff(r.get('vs_scratch'), r['n'])} | {_fmt_diff(r.get('vs_byol'), r['n'])} |")
    table = "\n".join(lines)
    pre = ["| target | variant | loss global | loss local | std global | std local (voxels) | mean overlap | "
           "mean scale ratio | wall s |", "|---|---|---|---|---|---|---|---|---|"]
    for p in pretraining:
        if "final_losses" not in p:
            pre.append(f"| {p['modality']} | {p['variant']} | {p.get('error') or p.get('skipped')} |||||||")
            continue
        fl, ind, views = p["final_losses"], p.get("final_indicators") or {}, p.get("views_mean") or {}
        pre.append(f"| {p['modality']} | {p['variant']} | {fl.get('loss_global', float('nan')):.3f} | "
                   f"{fl.get('loss_local', float('nan')):.3f} | {ind.get('std_global', float('nan')):.4f} | "
                   f"{ind.get('std_local_voxels', float('nan')):.4f} | {views.get('overlap', float('nan')):.2f} | "
                   f"{views.get('scale_ratio', float('nan')):.2f} | {p.get('wall_s', '')} |")
    sel = ["| target | variant | selection probe Dice (mean of 2 subsets, validation cases) |", "|---|---|---|"]
    for modality, info in selection.items():
        for variant, score in info["scores"].items():
            mark = " (chosen)" if variant == info["best"] else ""
            sel.append(f"| {modality} | {variant}{mark} | {score:.3f} |")
    text = (f"# Transfer study v2\n\n## Test Dice\n\n{table}\n\n"
            "Mean Dice over the test cases after the last fine-tuning step, averaged over labelled subsets; "
            "differences are paired by subset (same cases, same seed), mean and 95 % percentile bootstrap interval "
            "over subsets (only with 3 or more subsets); * marks an interval that excludes 0. `pgl:enc` starts "
            "from PGL's encoder only; `pgl` and "
            "`best` also from its decoder. Probe: frozen encoder, decoder and head trained.\n\n"
            f"## Pretraining\n\n" + "\n".join(pre) + "\n\nLosses and collapse indicators: mean of the last 10 logged "
            "steps. Overlap and scale ratio: realised per pair, mean over the run.\n\n"
            "## Selection of `best`\n\n" + "\n".join(sel) + "\n\n"
            f"Command: `{meta['command']}`  \nWall time: {meta['wall_s'] / 60:.1f} min on {meta['machine']}.  \n"
            f"Jobs: {meta['jobs']}\n")
    path.write_text(text)
    return table


def write_curves(records: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    tests = [r for r in records if r.get("purpose") == "test" and r.get("curve") and r["mode"] == "full"]
    panels = sorted({(r["modality"], r["k"]) for r in tests})
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), squeeze=False)
    for ax, (modality, k) in zip(axes[0], panels, strict=True):
        for arm in FULL_ARMS:
            runs = [r for r in tests if (r["modality"], r["k"], r["arm"]) == (modality, k, arm)]
            if not runs:
                continue
            steps = [p["step"] for p in runs[0]["curve"]]
            dice = np.nanmean([[p["dice"] for p in r["curve"]] for r in runs], axis=0)
            ax.plot(steps, dice, marker="o", ms=3, label=arm)
        ax.set_title(f"{modality}, K = {k}")
        ax.set_xlabel("fine-tuning step")
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("test Dice (mean over subsets)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("study_data"), help="folder written by study_data.py")
    parser.add_argument("--work", type=Path, default=Path("runs/transfer_v2"), help="run folders and job records")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "v2")
    parser.add_argument("--targets", default="CT,MRI")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=1, help="parallel job processes")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process (default: cores/workers)")
    parser.add_argument("--deadline-min", type=float, default=None, help="take no new job after this many minutes")
    parser.add_argument("--quick", action="store_true", help="tiny budgets and subsets: proves every path runs")
    parser.add_argument("--report", type=Path, metavar="JSON",
                        help="only rewrite the .md and the plot from a result JSON")
    return parser.parse_args(argv)


def rewrite_report(path: Path) -> None:
    """The tables and plot of an earlier result JSON, written again beside it (e.g. after a format change)."""
    result = json.loads(path.read_text())
    records = result["records"]
    rows = summarise(records)
    pretraining = [r for r in records if r.get("kind") == "pretrain"]
    write_report(result["meta"], rows, pretraining, result["selection"], path.with_suffix(".md"))
    write_curves(records, path.with_name(path.stem + "_curves.png"))


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.report:
        rewrite_report(args.report)
        return {}
    started = time.time()
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    deadline = started + 60 * args.deadline_min if args.deadline_min else float("inf")
    settings = {"data": str(args.data.resolve()), "work": str(args.work.resolve()), "device": args.device,
                "threads": threads, "quick": args.quick, "deadline": deadline}
    _init_worker(settings)
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    log_file = open(args.work / "study.log", "a")  # noqa: SIM115

    def log(msg: str) -> None:
        print(msg, flush=True)
        log_file.write(msg + "\n")
        log_file.flush()

    from multiprocessing import get_context

    chosen = [t for t in targets(args.quick).values() if t.modality in args.targets.split(",")]
    manifests = {t.modality: json.loads((args.data / "manifest.json").read_text())[t.modality.lower()] for t in chosen}
    if args.quick:
        for t in chosen:
            m = manifests[t.modality]
            m["train"], m["test"] = m["train"][:4], m["test"][:1]
    work = args.work
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=get_context("spawn"), initializer=_init_worker,
                             initargs=(settings,)) as pool:
        variants = QUICK_VARIANTS if args.quick else tuple(VARIANTS)
        pre_jobs = [_job("pretrain", work, t.modality, f"pretrain-{v}", variant=v) for t in chosen for v in variants]
        pretraining = _run_all(pool, pre_jobs, log)
        encoders = {(p["modality"], p["variant"]): p["encoder"] for p in pretraining if "encoder" in p}
        select_jobs = []
        for t in chosen:
            enc = {v: encoders.get((t.modality, v)) for v in variants}
            if all(enc.values()):
                select_jobs += _selection_jobs(work, t, manifests[t.modality], enc)
        selection_records = _run_all(pool, select_jobs, log)
        selection, test_jobs = {}, []
        for t in chosen:
            best, scores = choose_best([r for r in selection_records if r["modality"] == t.modality])
            selection[t.modality] = {"best": best, "scores": scores}
            log(f"{t.modality}: best variant {best} ({scores})")
            enc = {v: e for (m, v), e in encoders.items() if m == t.modality}
            test_jobs += _finetune_jobs(work, t, manifests[t.modality], enc, best)
        test_records = _run_all(pool, test_jobs, log)
    records = pretraining + selection_records + test_records
    rows = summarise(records)
    counts = {"done": sum(1 for r in records if "error" not in r and "skipped" not in r),
              "failed": sum(1 for r in records if "error" in r), "skipped": sum(1 for r in records if "skipped" in r)}
    import torch

    meta = {"command": "python benchmarks/transfer.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
            "wall_s": round(time.time() - started, 1), "jobs": counts,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, device {args.device}"
                       + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else "")
                       + f", {args.workers} workers x {threads} threads, torch {torch.__version__}",
            "targets": {t.modality: {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(t).items()
                                     if k != "arch"} | {"features": t.arch["arch_kwargs"]["features_per_stage"]}
                        for t in chosen},
            "manifests": {m: {k: v for k, v in man.items() if k != "pool_skipped"} for m, man in manifests.items()}}
    suffix = "-quick" if args.quick else ""
    result = {"meta": meta, "selection": selection, "summary": rows, "records": records}
    (args.out / f"transfer_v2{suffix}.json").write_text(json.dumps(result, indent=1, default=float))
    table = write_report(meta, rows, pretraining, selection, args.out / f"transfer_v2{suffix}.md")
    write_curves(records, args.out / f"transfer_v2{suffix}_curves.png")
    log(table)
    for r in records:
        if "error" in r:
            log(f"FAILED {r['modality']} {r['id']}: {r['error']}\n{r.get('traceback', '')}")
    return result


if __name__ == "__main__":
    main()
