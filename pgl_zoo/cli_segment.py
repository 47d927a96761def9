"""``pgl-zoo segment | evaluate``: label maps from a model, and their scores against ground truths.

Thin click commands over :func:`pgl_zoo.inference.segment_files` and :func:`pgl_zoo.evaluate.evaluate_folders`.
Sizes are (z, y, x) voxels; spacings (x, y, z) millimetres, as everywhere in pgl-zoo.
"""

from __future__ import annotations

from pathlib import Path

import click

from .errors import PglZooError
from .messages import say, warn
from .options import OVERLAP, SizesType


@click.command("segment")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--out", required=True, type=click.Path(),
              help="Output label file (one input: .nii.gz/.nrrd/.mha; with a DICOM --format: .dcm) or folder "
                   "(NAME.nii.gz per volume; NAME_seg.dcm or NAME_rtstruct.dcm per DICOM series).")
@click.option("--format", "output_format", type=click.Choice(["nifti", "dicom-seg", "rtstruct"]), default="nifti",
              show_default=True,
              help="nifti: a label image in the input's format (NIfTI for a DICOM series). dicom-seg: a DICOM "
                   "Segmentation (one segment per class of the model's card: its name, a SNOMED CT code, the "
                   "model's name and sha256; for viewers such as 3D Slicer and OHIF). rtstruct: an RT Structure "
                   "Set (one ROI per class, named as in the card; the format radiotherapy planning systems import). "
                   "Both reference the input series' slices, so every input must be a DICOM series folder; they "
                   "need the extra: pip install \"pgl-zoo[dicom]\".")
@click.option("--model", required=True, metavar="RUN|FOLDER|NAME",
              help="A finetune run folder, an exported model folder, or a zoo segmentation model name.")
@click.option("--overlap", default=0.5, show_default=True, type=OVERLAP, help="Sliding-window overlap, in [0, 1).")
@click.option("--sw-batch-size", type=click.IntRange(min=1),
              help="Windows per forward pass [default: 2 on CPU (measured fastest on a 2-core CPU), 4 on GPU].")
@click.option("--window-size", type=SizesType(), metavar="Z,Y,X",
              help="Sliding-window size in voxels, whole numbers >= 1, at most 256^3 voxels in all (default: the "
                   "card's patch).")
@click.option("--compile", "compile_", is_flag=True,
              help="torch.compile the network once (inductor, frozen weights): 1.3-1.6x faster than uncompiled "
                   "on a 2-core CPU (measured), after 25-60 s of compiling; pays off for large scans or many files.")
@click.option("--preview", type=click.Path(dir_okay=False),
              help="Also write a PNG of three orthogonal slices with the labels overlaid (needs matplotlib).")
@click.option("--device", default="cpu", show_default=True, help="Torch device (cpu, cuda, ...).")
@click.option("--overwrite", is_flag=True,
              help="Replace existing label (and --preview) files; without it an existing file, such as a "
                   "hand-corrected label of the same name, is never replaced and nothing is written.")
@click.option("--no-progress", is_flag=True, help="No progress bar or per-file line.")
def segment_cmd(inputs, out, output_format, model, overlap, sw_batch_size, window_size, compile_, preview, device,
                overwrite, no_progress) -> None:
    """Segment INPUTS (NIfTI, NRRD, MHA files, DICOM series folders); labels keep each input's geometry.

    With --format dicom-seg or rtstruct the labels are written as DICOM objects on the input series'
    own slices instead of a label image. A CT model warns (one line per scan) about a scan not in HU,
    and any model about a scan that looks like a label map; both are segmented all the same."""
    from .inference import segment_files

    segment_files(inputs, out, model, overlap=overlap, sw_batch_size=sw_batch_size, roi_zyx=window_size,
                  preview=preview, device=device, progress=not no_progress, compile=compile_, overwrite=overwrite,
                  output_format=output_format)


@click.command("evaluate")
@click.option("--pred", required=True, type=click.Path(), help="Folder of predicted label maps.")
@click.option("--gt", required=True, type=click.Path(), help="Folder of ground-truth label maps (same case names).")
@click.option("--num-classes", type=int, help="Classes including background (default: largest label + 1).")
@click.option("--labels", "labels_json", type=click.Path(dir_okay=False),
              help="dataset.json or card.json giving label names (default: dataset.json beside --gt, if any).")
@click.option("--hd95", is_flag=True, help="Also compute the 95th-percentile Hausdorff distance (mm).")
@click.option("--out", type=click.Path(), help="Write OUT.csv and OUT.json (default: PRED/evaluation.*).")
@click.option("--overwrite", is_flag=True,
              help="Replace existing OUT.csv / OUT.json files that are not earlier reports of evaluate (those are "
                   "refreshed without it); without it any other file there is never replaced.")
@click.option("--allow-missing", is_flag=True, help="Exit 0 even when some ground truths have no prediction.")
@click.option("--labelled-classes", type=click.Path(dir_okay=False), metavar="FILE",
              help="Partial labels (the file of finetune --labelled-classes): a class is scored only on the cases "
                   "that contour it; the table's 'cases' row says how many cases each class mean covers. Needs "
                   "--num-classes or label names.")
def evaluate_cmd(pred, gt, num_classes, labels_json, hd95, out, overwrite, allow_missing, labelled_classes) -> None:
    """Dice per class and mean of predictions against ground truths, paired by file name.

    The reports are written atomically and read back before they replace anything."""
    from .evaluate import check_report_targets, evaluate_folders, write_evaluation
    from .finetune.data import label_names_from_file, read_label_names
    from .partial_labels import read_labelled_classes

    names = None
    if labels_json:
        names = label_names_from_file(Path(labels_json))
    elif (Path(gt).parent / "dataset.json").is_file():
        names = read_label_names(Path(gt).parent)
    report = out or Path(pred) / "evaluation"
    check_report_targets(report, overwrite)  # before any work
    labelled = None
    if labelled_classes:
        if num_classes is None and not names:
            raise PglZooError("--labelled-classes needs --num-classes or label names (--labels)")
        count = num_classes or 1 + max(int(k) for k in names)
        labelled = read_labelled_classes(labelled_classes, names, count)
        num_classes = count
    evaluation = evaluate_folders(pred, gt, num_classes=num_classes, label_names=names, hd95=hd95,
                                  labelled_classes=labelled)
    say(evaluation.table())
    written = write_evaluation(evaluation, report, overwrite=overwrite)
    say(f"written: {', '.join(str(p) for p in written)}")
    extra = (f"{len(evaluation.extra)} extra prediction(s) without ground truth: {', '.join(evaluation.extra)}"
             if evaluation.extra else "")
    if evaluation.missing and not allow_missing:
        raise PglZooError(f"{len(evaluation.missing)} missing prediction(s) in {pred}: "
                          f"{', '.join(evaluation.missing)}" + (f"; {extra}" if extra else ""))
    if extra:
        warn(extra)


