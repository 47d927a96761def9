"""Pretraining data from a raw folder: discover, check, preprocess and cache volumes.

Every volume found under the folder (NIfTI, NRRD, MHA/MHD, each DICOM series) is read with
SimpleITK, reoriented, resampled to the target spacing (x, y, z) mm, clipped to the intensity
window and normalised (``pgl_zoo.imaging.preprocess_image``), and stored as a float32 (z, y, x)
``.npy`` in a cache keyed by the file content, the preprocessing parameters and
``CACHE_VERSION``. Decisions to skip a volume are cached as well, so a second run starts at once.

Skipped, with one warning line each: unreadable files, 2D or empty volumes, NaN/inf values,
DICOM series with non-uniform slice spacing (their uniform-grid geometry would be wrong),
constant volumes, label-like volumes (integer values >= 0, at most ``LABEL_MAX_VALUES`` distinct
values, and piecewise constant: see :func:`equal_neighbour_fraction`; segmentation masks should not
be trained on) and, for CT, scans not in HU when
the policy says so. Non-HU detection (CT only): minimum above ``NON_HU_MIN`` (-500), i.e. no air,
as in uint8 0..255 or windowed scans. Policies: ``skip`` (default), ``rescale`` (map the scan's own
[min, max] linearly onto the window, an approximation), ``keep`` (use the values as they are).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..atomic import atomic_write
from ..cards import Preprocessing
from ..errors import DataError, PglZooError
from ..imaging import (  # noqa: F401 - the label and HU constants are re-exported where they used to live
    LABEL_MAX_VALUES,
    LABEL_MIN_FLATNESS,
    NON_HU_MIN,
    VolumeRef,
    discover_volumes,
    equal_neighbour_fraction,
    label_map_reason,
    max_voxels,
    non_hu_reason,
    preprocess_image,
)

CACHE_VERSION = "pgl-pretrain-cache-3"
NON_HU_POLICIES = ("skip", "rescale", "keep")


def default_cache_dir() -> Path:
    """``$PGL_ZOO_CACHE`` or ``~/.cache/pgl_zoo/preprocessed``."""
    env = os.environ.get("PGL_ZOO_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "pgl_zoo" / "preprocessed"


@dataclass
class PreparedVolume:
    """One usable, preprocessed volume: its cached array and where it came from."""

    source: str
    array_path: Path | None
    shape_zyx: tuple[int, int, int]
    note: str = ""
    array: np.ndarray | None = None  # kept in memory when the cache could not be written

    def load(self, mmap: bool = True) -> np.ndarray:
        if self.array is not None:
            return self.array
        return np.load(self.array_path, mmap_mode="r" if mmap else None)


@dataclass
class PreparedData:
    """The result of :func:`prepare_volumes`: usable volumes and the skipped ones with reasons."""

    volumes: list[PreparedVolume]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    cache_hits: int = 0

    def summary(self) -> str:
        return (f"{len(self.volumes)} usable volume(s), {len(self.skipped)} skipped, "
                f"{self.cache_hits} from cache")


def _files_of(ref: VolumeRef) -> list[Path]:
    if ref.path.is_dir():
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(ref.path), ref.series_uid or "")
        return [Path(f) for f in files]
    files = [ref.path]
    if ref.path.name.lower().endswith(".mhd"):  # header + raw data file
        raw = [p for p in ref.path.parent.glob(ref.path.stem + ".*") if p != ref.path]
        files += sorted(raw)
    return files


def cache_key(ref: VolumeRef, params: dict) -> str:
    """sha256 over the file content(s), the preprocessing parameters and the code version."""
    h = hashlib.sha256()
    h.update(CACHE_VERSION.encode())
    h.update(json.dumps(params, sort_keys=True).encode())
    for path in _files_of(ref):
        h.update(path.name.encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)
    atomic_write(path, write)


def check_raw(array: np.ndarray, modality: str) -> tuple[str | None, bool]:
    """(reason to skip or None, is_non_hu) for a raw (z, y, x) array as read from disk (the label-map and
    non-HU checks are :func:`pgl_zoo.imaging.label_map_reason` and :func:`pgl_zoo.imaging.non_hu_reason`,
    which ``segment`` uses too)."""
    if array.size == 0:
        return "empty volume", False
    finite = np.isfinite(array)
    if not finite.all():
        return "contains NaN or infinite values", False
    lo, hi = float(array.min()), float(array.max())
    if lo == hi:
        return f"constant volume (all values {lo:g})", False
    reason = label_map_reason(array, max_voxels=None)
    if reason:
        return reason, False
    return None, non_hu_reason(array, modality) is not None


def preprocess_ref(ref: VolumeRef, prep: Preprocessing, modality: str, non_hu: str) -> tuple[np.ndarray | None, str]:
    """(array or None, note or skip reason) for one volume; raises nothing for bad data."""
    try:
        shown = sitk.ProcessObject.GetGlobalWarningDisplay()
        sitk.ProcessObject.SetGlobalWarningDisplay(False)  # e.g. non-uniform DICOM spacing
        try:
            image = ref.read()
        finally:
            sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    except PglZooError as exc:  # includes NaN voxels and unevenly spaced DICOM slices (read_image checks them)
        return None, str(exc).split(": ", 1)[-1] if str(exc).startswith(str(ref.path)) else str(exc)
    raw = sitk.GetArrayViewFromImage(image)
    reason, is_non_hu = check_raw(raw, modality)
    if reason:
        return None, reason
    note = ""
    if is_non_hu:
        desc = non_hu_reason(raw, modality)
        if non_hu == "skip":
            return None, f"{desc}; skipped (--non-hu skip)"
        if non_hu == "rescale" and prep.window is not None:
            lo, hi = float(raw.min()), float(raw.max())
            w0, w1 = prep.window
            image = sitk.ShiftScale(sitk.Cast(image, sitk.sitkFloat32), -lo, (w1 - w0) / (hi - lo))
            image = sitk.ShiftScale(image, w0, 1.0)
            note = f"{desc}; rescaled [min, max] -> window (--non-hu rescale)"
        else:
            note = f"{desc}; used as is (--non-hu keep)"
    array = preprocess_image(image, prep).array
    if not np.isfinite(array).all():
        return None, "preprocessing produced NaN values"
    return np.ascontiguousarray(array, dtype=np.float32), note


def prepare_volumes(
    root: str | Path | list[str | Path],
    prep: Preprocessing,
    modality: str = "CT",
    non_hu: str = "skip",
    cache_dir: str | Path | None = None,
    warn: Callable[[str], None] | None = None,
    write_cache: bool = True,
) -> PreparedData:
    """Discover, check, preprocess and cache every volume under ``root`` (a folder, file or list).

    ``warn`` receives one line per skipped or rescaled volume (default: ``warnings.warn``).
    Raises :class:`DataError` only when no usable volume remains. With ``write_cache=False`` (the
    non-zero ranks of a distributed run, which read what rank 0 wrote) a missing entry goes to a
    private temporary folder instead of the shared cache.
    """
    if non_hu not in NON_HU_POLICIES:
        raise DataError(f"--non-hu must be one of {', '.join(NON_HU_POLICIES)}, got {non_hu!r}")
    warn = warn or (lambda msg: warnings.warn(msg, stacklevel=3))
    max_voxels()  # a bad $PGL_ZOO_MAX_VOXELS is one error, not a reason to skip every volume
    roots = root if isinstance(root, list) else [root]
    refs: list[VolumeRef] = []
    for r in roots:
        refs.extend(discover_volumes(r, warn=warn))
    if not refs:
        raise DataError(f"{', '.join(map(str, roots))}: no volumes found (.nii, .nii.gz, .nrrd, .mha, .mhd, DICOM)")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    private: Path | None = None
    params = {"preprocessing": asdict(prep), "modality": modality, "non_hu": non_hu}
    out = PreparedData(volumes=[])
    cache_failed = False
    for ref in refs:
        try:
            key = cache_key(ref, params)
        except OSError as exc:  # dangling symbolic link, link loop, unreadable file
            reason = f"cannot be read ({exc.strerror or exc})"
            out.skipped.append((str(ref), reason))
            warn(f"{ref}: skipped: {reason}")
            continue
        meta_path, npy_path = cache / f"{key}.json", cache / f"{key}.npy"
        meta = None
        if meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text())
                if meta.get("status") == "ok" and not npy_path.exists():
                    meta = None
            except (OSError, ValueError):
                meta = None
        if meta is not None:
            out.cache_hits += 1
        else:
            array, note = preprocess_ref(ref, prep, modality, non_hu)
            meta = {"source": str(ref), "status": "ok" if array is not None else "skipped", "note": note,
                    "shape_zyx": list(array.shape) if array is not None else None, "params": params}
            if not write_cache and not cache_failed:
                private = private or Path(tempfile.mkdtemp(prefix="pgl_zoo_cache_"))
                meta_path, npy_path = private / meta_path.name, private / npy_path.name
            if not cache_failed:
                try:
                    if array is not None:
                        _save_npy(npy_path, array)
                    atomic_write(meta_path, lambda tmp, m=meta: Path(tmp).write_text(json.dumps(m, indent=1)))
                except OSError as exc:  # full or read-only disk: go on without the cache
                    cache_failed = True
                    warn(f"cache {meta_path.parent} cannot be written ({exc.strerror or exc}); continuing without "
                         "a cache (volumes kept in memory)")
            if cache_failed and array is not None:
                out.volumes.append(PreparedVolume(str(ref), None, tuple(array.shape), note, array=array))
                if note:
                    warn(f"{ref}: {note}")
                continue
        if meta["status"] == "ok":
            out.volumes.append(PreparedVolume(str(ref), npy_path, tuple(meta["shape_zyx"]), meta["note"]))
            if meta["note"]:
                warn(f"{ref}: {meta['note']}")
        else:
            out.skipped.append((str(ref), meta["note"]))
            warn(f"{ref}: skipped: {meta['note']}")
    if not out.volumes:
        raise DataError(
            f"{', '.join(map(str, roots))}: no usable volume among {len(refs)} found "
            f"({len(out.skipped)} skipped; see the warnings above; --non-hu rescale or keep uses non-HU CT)"
        )
    return out
