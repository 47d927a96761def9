"""DICOM series: listing the series of a folder, choosing one, and reading it as one volume.

A folder is read as one series (never recursively); its slices must be readable, evenly spaced, and
hold the pixel data their headers claim (:func:`pgl_zoo.imaging.header_checks.check_header`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import ImageReadError
from .files import special_file_problem
from .header_checks import check_header


def list_dicom_series(folder: str | Path) -> list[str]:
    """Series instance UIDs of the DICOM series directly inside ``folder`` (not recursive)."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK warns on every folder without DICOM
    try:
        return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or [])
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def dicom_series_files(folder: str | Path, series_uid: str | None = None) -> list[str]:
    """The files of one DICOM series of ``folder``, in GDCM's slice order: the folder's only series, or
    ``series_uid`` (needed when the folder holds several). ImageReadError names the folder when it holds
    no series, several without ``series_uid``, or not that one. The one choice of a series, for
    reading (:func:`read_dicom_series`) and for DICOM output (:func:`pgl_zoo.dicom_output.series_files`)."""
    series = list_dicom_series(folder)
    if not series:
        raise ImageReadError(f"{folder}: folder holds no DICOM series and no volume file")
    if series_uid is None:
        if len(series) > 1:
            raise ImageReadError(
                f"{folder}: holds {len(series)} DICOM series; name one of: {', '.join(series)}"
            )
        series_uid = series[0]
    elif series_uid not in series:
        raise ImageReadError(f"{folder}: no DICOM series {series_uid}")
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid))


def read_dicom_series(folder: Path, series_uid: str | None) -> sitk.Image:
    """One series of ``folder`` (:func:`dicom_series_files`) as one volume, after refusing special files in
    the folder, slices GDCM left out as unreadable, uneven slice spacing and short pixel data."""
    special = next(((p, problem) for p in sorted(folder.iterdir()) if (problem := special_file_problem(p))), None)
    if special is not None:  # GDCM opens every file of the folder: a FIFO would block it for ever
        raise ImageReadError(f"{special[0]}: {special[1]}; remove it from the DICOM folder {folder}")
    files = dicom_series_files(folder, series_uid)
    _check_unlisted_dicom(folder, files)
    problem = dicom_spacing_problem(files)
    if problem:
        raise ImageReadError(f"{folder}: {problem}; stacked on a uniform grid its geometry would be wrong")
    check_header(folder, files)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    return reader.Execute()


def _check_unlisted_dicom(folder: Path, files: Sequence[str]) -> None:
    """Refuse a DICOM file of the folder that GDCM left out of every series because it cannot be read
    (a slice truncated by a copy): the series would otherwise be stacked without it, silently."""
    listed = {os.path.realpath(f) for f in files}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not entry.is_file() or os.path.realpath(entry) in listed:
            continue
        try:
            with open(entry, "rb") as handle:
                if handle.read(132)[128:132] != b"DICM":
                    continue
        except OSError:
            continue
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(entry))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            raise ImageReadError(f"{entry}: a DICOM file of {folder} cannot be read (truncated or corrupt); the "
                                 "series would be stacked without it") from None


def dicom_spacing_problem(files: list[str], tolerance: float = 1.5) -> str | None:
    """Why the slices of a DICOM series are not evenly spaced (missing slices, mixed stacks), or None
    (fine, or positions unknown). The one check used by read_image and, through it, pretraining."""
    positions = []
    for name in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(name))
        try:
            reader.ReadImageInformation()
            positions.append([float(v) for v in reader.GetMetaData("0020|0032").split("\\")])
        except (RuntimeError, ValueError):
            return None
    if len(positions) < 3:
        return None
    gaps = np.linalg.norm(np.diff(np.asarray(positions), axis=0), axis=1)
    if gaps.min() <= 1e-6:
        return "DICOM series has slices at duplicate positions"
    if gaps.max() / gaps.min() > tolerance:
        return f"DICOM series has non-uniform slice spacing (gaps {gaps.min():.2f} to {gaps.max():.2f} mm)"
    return None
