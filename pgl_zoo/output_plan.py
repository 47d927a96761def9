"""Where the labels of ``pgl-zoo segment`` go: one output file per input volume, planned and checked
before any work (:func:`plan_outputs`), in the format asked for (:data:`OUTPUT_FORMATS`), with the
preview PNGs beside them (:func:`preview_paths`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .imaging.discover import VolumeRef
from .imaging.files import VOLUME_SUFFIXES, has_volume_suffix

__all__ = ["OUTPUT_FORMATS", "check_dicom_inputs", "output_names", "plan_outputs", "preview_paths"]


def output_names(refs: Sequence[VolumeRef]) -> list[str]:
    """Unique output stems: the file name without suffix, or folder name (+ series UID if several)."""
    stems = [ref.stem for ref in refs]
    names = []
    for ref, stem in zip(refs, stems, strict=True):
        if ref.series_uid and stems.count(stem) > 1:
            stem = f"{stem}_{ref.series_uid}"
        names.append(stem)
    return names


def _output_suffix(ref: VolumeRef) -> str:
    """The input's own format (exact double-precision geometry for NRRD/MHA); NIfTI for DICOM series."""
    if ref.path.is_dir():
        return ".nii.gz"
    name = ref.path.name.lower()
    suffix = next(s for s in VOLUME_SUFFIXES if name.endswith(s))
    return {".nhdr": ".nrrd", ".mhd": ".mha", ".nii": ".nii.gz"}.get(suffix, suffix)


# --format of segment -> the name ending of each output in a folder (None: the input's own format).
OUTPUT_FORMATS = {"nifti": None, "dicom-seg": "_seg.dcm", "rtstruct": "_rtstruct.dcm"}


def check_dicom_inputs(refs: Sequence[VolumeRef], output_format: str) -> None:
    """Refuse (ImageReadError, one line naming the input) any input that is not a DICOM series when
    ``output_format`` is a DICOM object that references the scan's slices."""
    from .errors import ImageReadError

    for ref in refs:
        if not (ref.path.is_dir() and ref.series_uid):
            raise ImageReadError(f"{ref}: --format {output_format} needs a DICOM series folder as input (the "
                                 "DICOM object references the scan's own slices); segment this file with the "
                                 "default --format nifti (nothing was written)")


def preview_paths(preview: str | Path | None, names: Sequence[str]) -> list[Path]:
    """The preview PNG of each volume: ``preview`` itself for one, ``STEM_NAME.png`` each for several."""
    if preview is None:
        return []
    png = Path(preview)
    if len(names) == 1:
        return [png]
    return [png.with_name(f"{png.stem}_{name}.png") for name in names]


def plan_outputs(refs: Sequence[VolumeRef], inputs: Sequence[str | Path], out: str | Path,
                 output_format: str = "nifti", overwrite: bool = False,
                 preview: str | Path | None = None) -> list[Path]:
    """The label file of each volume, checked before any work: never an input file, never inside a
    folder given as input, and never one file for two volumes (``a/case.nrrd`` and ``b/case.nrrd``,
    ``x.nii`` and ``x.nii.gz``). Without ``overwrite`` no existing file is replaced: neither a label
    (it may be a hand-corrected contour) nor a ``preview`` PNG. Raises ImageWriteError (or
    OverwriteError) naming the files otherwise.

    ``output_format`` "dicom-seg" / "rtstruct": one volume may go to a file ``*.dcm``, else ``out``
    is a folder that receives ``NAME_seg.dcm`` / ``NAME_rtstruct.dcm`` per series."""
    from .errors import ImageWriteError, OverwriteError

    out = Path(out)
    ending = OUTPUT_FORMATS[output_format]
    if ending is None:
        is_file = has_volume_suffix(out.name)
    else:
        is_file = out.name.lower().endswith(".dcm")
        if has_volume_suffix(out.name):
            raise ImageWriteError(f"{out}: --format {output_format} writes a DICOM file; name it *.dcm, or give a "
                                  "folder (nothing was written)")
    single_file = len(refs) == 1 and is_file
    if not single_file and is_file:
        raise ImageWriteError(f"{out}: {len(refs)} volumes to segment need an output folder, not a file")
    if single_file:
        targets = [out]
    else:
        targets = [out / f"{name}{ending or _output_suffix(ref)}"
                   for ref, name in zip(refs, output_names(refs), strict=True)]
    first: dict[str, VolumeRef] = {}
    for ref, target in zip(refs, targets, strict=True):
        key = os.path.normcase(os.path.abspath(target)).lower()
        if key in first:
            raise ImageWriteError(f"{first[key]} and {ref} would both be written to {target}; rename one or "
                                  "segment them separately (nothing was written)")
        first[key] = ref
    inputs_by_file = {os.path.realpath(f): ref for ref in refs for f in ref.files()}
    folders = [os.path.realpath(p) for p in inputs if Path(p).is_dir()]
    for target in targets:
        real = os.path.realpath(target)
        if real in inputs_by_file:
            raise ImageWriteError(f"{target}: is the input {inputs_by_file[real]}; writing the labels there would "
                                  "destroy the scan (choose another -o)")
        inside = next((f for f in folders if real.startswith(f + os.sep)), None)
        if inside is not None:
            raise ImageWriteError(f"{target}: lies in the input folder {inside}; choose an -o outside it "
                                  "(nothing was written)")
    if not overwrite:
        for target in [*targets, *preview_paths(preview, output_names(refs))]:
            if target.exists() or target.is_symlink():
                raise OverwriteError(f"{target}: exists; pass --overwrite to replace it (nothing was written)")
    return targets
