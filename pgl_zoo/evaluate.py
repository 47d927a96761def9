"""Compare a folder of predicted label maps with a folder of ground truths: Dice (and HD95) per class.

Files are paired by name without the volume suffix (``case_001.nii.gz`` and ``case_001.nrrd`` are the
same case). A ground truth without a prediction is reported as *missing*, a prediction without a
ground truth as *extra*; neither is dropped silently. Dice conventions: see :mod:`pgl_zoo.metrics`
(a class absent from both maps is NaN and left out of means).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_write
from .errors import DataError
from .imaging.files import has_volume_suffix, nnunet_channel, strip_volume_suffix
from .imaging.geometry import geometry_differences
from .imaging.read import read_image
from .label_maps import check_label_values
from .metrics import dice_per_class, hd95_per_class, nanmean
from .partial_labels import LabelledClasses

__all__ = ["Evaluation", "evaluate_folders", "pair_files"]


@dataclass
class Evaluation:
    """Per-case and mean scores. ``cases[name]["dice"][class_name]`` etc.; class means over cases."""

    class_names: dict[int, str]
    cases: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    not_contoured: dict[str, list[str]] = field(default_factory=dict)  # partial labels: case -> class names

    def class_means(self, metric: str = "dice") -> dict[str, float]:
        return {name: nanmean([c[metric][name] for c in self.cases.values() if metric in c])
                for name in self.class_names.values()}

    def class_counts(self, metric: str = "dice") -> dict[str, int]:
        """How many cases each class mean covers (finite values: contoured, and present in either map)."""
        return {name: sum(1 for c in self.cases.values() if metric in c and not math.isnan(c[metric][name]))
                for name in self.class_names.values()}

    def mean(self, metric: str = "dice") -> float:
        return nanmean(list(self.class_means(metric).values()))

    @property
    def metrics(self) -> list[str]:
        return ["dice", "hd95"] if any("hd95" in c for c in self.cases.values()) else ["dice"]

    def to_dict(self) -> dict[str, Any]:
        def clean(value: float) -> float | None:
            return None if math.isnan(value) else round(value, 6)

        return {
            "cases": {n: {m: {k: clean(v) for k, v in s.items()} for m, s in c.items()} for n, c in self.cases.items()},
            "mean": {m: {**{k: clean(v) for k, v in self.class_means(m).items()}, "mean": clean(self.mean(m))}
                     for m in self.metrics},
            "cases_per_class": {m: self.class_counts(m) for m in self.metrics},
            "not_contoured": self.not_contoured,
            "missing_predictions": self.missing,
            "extra_predictions": self.extra,
        }

    def rows(self) -> list[list[str]]:
        """Table rows: header, one row per case (missing ones flagged), mean row."""
        names = list(self.class_names.values())
        header = ["case", "status"] + [f"{m}_{n}" for m in self.metrics for n in names] + ["mean_dice"]

        def fmt(v: float) -> str:
            return "nan" if math.isnan(v) else f"{v:.4f}"

        rows = [header]
        for case, scores in self.cases.items():
            rows.append([case, "ok"] + [fmt(scores[m][n]) for m in self.metrics for n in names]
                        + [fmt(nanmean(list(scores["dice"].values())))])
        blank = [""] * (len(header) - 2)
        rows += [[case, "missing prediction"] + blank for case in self.missing]
        rows += [[case, "extra prediction (no ground truth)"] + blank for case in self.extra]
        rows.append(["mean", f"{len(self.cases)} cases"] + [fmt(self.class_means(m)[n]) for m in self.metrics
                                                           for n in names] + [fmt(self.mean())])
        rows.append(["cases", "in each mean"] + [str(self.class_counts(m)[n]) for m in self.metrics for n in names]
                    + [""])
        return rows

    def table(self) -> str:
        rows = self.rows()
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)

    def to_csv(self) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(self.rows())
        return buffer.getvalue()


def _volumes(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and has_volume_suffix(path.name) and not path.name.startswith("."):
            name = strip_volume_suffix(path.name)
            if name in found:
                raise DataError(f"{folder}: two files for case {name}: {found[name].name}, {path.name}")
            found[name] = path
    return found


def _nnunet_case(name: str, gts: dict[str, Path], preds: dict[str, Path]) -> str:
    """``CASE_0000`` -> ``CASE`` when only the latter is a ground-truth case and no prediction has that name."""
    case, channel = nnunet_channel(name)
    if name in gts or channel is None:
        return name
    return case if case in gts and case not in preds else name


def pair_files(pred_dir: str | Path, gt_dir: str | Path) -> tuple[dict[str, tuple[Path, Path]], list[str], list[str]]:
    """({case: (prediction, ground truth)}, missing predictions, extra predictions), by case name.

    A prediction named like an nnU-Net image, ``CASE_0000``, pairs with the ground truth ``CASE``."""
    preds, gts = _volumes(Path(pred_dir)), _volumes(Path(gt_dir))
    if not gts:
        raise DataError(f"{gt_dir}: no label files (.nii.gz, .nrrd, .mha, ...) found")
    # `segment imagesTr/` names its outputs after nnU-Net images (CASE_0000); their labels are CASE.
    preds = {_nnunet_case(name, gts, preds): path for name, path in preds.items()}
    pairs = {name: (preds[name], gts[name]) for name in gts if name in preds}
    return pairs, sorted(set(gts) - set(preds)), sorted(set(preds) - set(gts))


def evaluate_folders(
    pred_dir: str | Path, gt_dir: str | Path, num_classes: int | None = None,
    label_names: dict[str, str] | None = None, hd95: bool = False,
    labelled_classes: LabelledClasses | None = None,
) -> Evaluation:
    """Score every prediction against its ground truth (same grid required: the size must match and
    spacing, origin and direction agree within 1e-3; a refusal names what differs). ``num_classes``
    defaults to the largest label seen + 1. Classes 1..K-1 are scored. Cases are read and scored one
    at a time: memory holds one prediction and one ground truth, whatever the number of cases. With
    ``labelled_classes`` (partial labels) a class is scored only on the cases that contour it (elsewhere
    NaN, listed under ``not_contoured``); every scored case must be listed there."""
    pairs, missing, extra = pair_files(pred_dir, gt_dir)
    if labelled_classes is not None:
        labelled_classes.check_cases(pairs)
    scored: dict[str, dict[str, dict[int, float]]] = {}
    highest = 1
    for name, (pred_path, gt_path) in pairs.items():
        pred_image, gt_image = read_image(pred_path), read_image(gt_path)
        differences = geometry_differences(pred_image, gt_image)
        if differences:
            raise DataError(f"{pred_path} and {gt_path}: different geometry ({'; '.join(differences)})")
        spacing = gt_image.GetSpacing()
        pred = _labels(pred_image, pred_path, num_classes)
        del pred_image
        gt = _labels(gt_image, gt_path, num_classes)
        del gt_image
        if labelled_classes is not None:
            labelled_classes.check_label(name, gt)
        top = int(max(pred.max(initial=0), gt.max(initial=0)))
        highest = max(highest, top)
        # A class above this case's largest label is absent from both maps: NaN, as with the final count.
        classes = num_classes if num_classes is not None else max(top + 1, 2)
        scored[name] = {"dice": dice_per_class(pred, gt, classes)}
        if hd95:
            scored[name]["hd95"] = hd95_per_class(pred, gt, classes, spacing)
        del pred, gt
    if num_classes is None:
        num_classes = max(highest + 1, 2)
    names = label_names or {}
    evaluation = Evaluation({c: names.get(str(c), f"class_{c}") for c in range(1, num_classes)},
                            missing=missing, extra=extra)
    for name, scores in scored.items():
        contoured = labelled_classes.of(name) if labelled_classes is not None else range(num_classes)
        if labelled_classes is not None:
            evaluation.not_contoured[name] = [n for c, n in evaluation.class_names.items() if c not in contoured]
        evaluation.cases[name] = {metric: {evaluation.class_names[c]: values.get(c, math.nan) if c in contoured
                                           else math.nan for c in range(1, num_classes)}
                                  for metric, values in scores.items()}
    return evaluation


def _labels(image: sitk.Image, path: Path, num_classes: int | None) -> np.ndarray:
    """The label array, refused (DataError naming the file) as :func:`pgl_zoo.label_maps.check_label_values`
    says: a negative or fractional value, or one not below ``num_classes`` (without it: one that needs an
    explicit --num-classes)."""
    array = sitk.GetArrayFromImage(image)
    check_label_values(array, path, num_classes)
    return array if np.issubdtype(array.dtype, np.integer) else array.astype(np.int64)


REPORT_JSON_KEYS = ("cases", "mean", "missing_predictions", "extra_predictions")


def report_paths(out: str | Path) -> tuple[Path, Path]:
    """``OUT.csv`` and ``OUT.json`` (``out`` with or without either suffix)."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix.lower() in (".csv", ".json") else out
    return stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".json")


def _is_report(path: Path) -> bool:
    """Whether ``path`` is a report evaluate wrote (which may be refreshed without --overwrite)."""
    try:
        if path.suffix.lower() == ".json":
            document = json.loads(path.read_text())
            return isinstance(document, dict) and set(REPORT_JSON_KEYS) <= set(document)
        with open(path, newline="") as handle:
            return handle.readline().startswith("case,status")
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return False


def check_report_targets(out: str | Path, overwrite: bool = False) -> None:
    """Refuse (OverwriteError) to replace an existing file that is not an earlier report of evaluate,
    unless ``overwrite``: ``--out`` may name anybody's file."""
    from .errors import OverwriteError

    for path in report_paths(out):
        if path.is_dir():
            raise OverwriteError(f"{path}: is a folder; choose another --out")
        if not overwrite and (path.exists() or path.is_symlink()) and not _is_report(path):
            raise OverwriteError(f"{path}: exists and is not an earlier evaluation report; pass --overwrite to "
                                 "replace it (nothing was written)")


def _write_verified(tmp: str, text: str) -> None:
    """Write ``text``, flush it to disk and read it back: a short write (full disk) raises OSError."""
    import errno
    import os

    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    if Path(tmp).read_text() != text:
        raise OSError(errno.EIO, "the written file does not read back as written (disk full?)")


def write_evaluation(evaluation: Evaluation, out: str | Path, overwrite: bool = False) -> list[Path]:
    """Write ``OUT.csv`` and ``OUT.json`` (``out`` with or without either suffix), each atomically and read
    back before it replaces the old file (a full disk leaves the old report whole and raises WriteError
    naming the file). An existing file that is not an earlier report needs ``overwrite``
    (:func:`check_report_targets`)."""
    check_report_targets(out, overwrite)
    csv_path, json_path = report_paths(out)
    for path, text in ((csv_path, evaluation.to_csv()), (json_path, json.dumps(evaluation.to_dict(), indent=2) + "\n")):
        atomic_write(path, lambda tmp, text=text: _write_verified(tmp, text))
    return [csv_path, json_path]
