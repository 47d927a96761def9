"""Pretraining data from a raw folder: discover, check, preprocess and cache volumes.

Every volume found under the folder (NIfTI, NRRD, MHA/MHD, each DICOM series) is read with
SimpleITK, reoriented, resampled (linear) to the target spacing (x, y, z) mm, and stored (z, y, x)
in the cache of :mod:`pgl_zoo.pretrain.cache`, with the map (window, normalisation) that turns it
into network input per view: int16 HU for CT, float16 network input otherwise. An entry is keyed by
the file content, the preprocessing parameters and ``CACHE_VERSION``, and found again by file stat;
decisions to skip a volume are cached as well, so a second run starts at once. Uncached volumes are
prepared by ``jobs`` processes, and shared among the ranks of a distributed run.

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

import multiprocessing
import signal
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..cards import Preprocessing
from ..errors import DataError, PglZooError
from ..imaging import (  # noqa: F401 - the label and HU constants are re-exported where they used to live
    LABEL_MAX_VALUES,
    LABEL_MIN_FLATNESS,
    NON_HU_MIN,
    IntensityMap,
    VolumeRef,
    discover_volumes,
    equal_neighbour_fraction,
    intensity_map,
    label_map_reason,
    max_voxels,
    non_hu_reason,
    preprocess_image,
)
from .cache import (  # noqa: F401 - CACHE_VERSION and default_cache_dir are part of this module's interface
    CACHE_VERSION,
    Entry,
    PretrainCache,
    content_key,
    default_cache_dir,
    encode,
    stat_signature,
)

NON_HU_POLICIES = ("skip", "rescale", "keep")
POLL_S = 1.0  # how often a process waiting for sources that others prepare looks again


@dataclass
class PreparedVolume:
    """One usable, preprocessed volume: its cached array, the map to network input, and its source.

    ``load()`` gives the stored (z, y, x) array: int16 scan units or float16/float32 network input
    (see :mod:`pgl_zoo.pretrain.cache`); ``intensity`` maps stored values to network input
    (``value * scale + shift``; None: already network input). ``load_normalized()`` gives the float32
    network input of the whole volume.
    """

    source: str
    array_path: Path | None
    shape_zyx: tuple[int, int, int]
    note: str = ""
    array: np.ndarray | None = None  # kept in memory when the cache could not be written
    intensity: IntensityMap | None = None
    minimum: float | None = None  # of the stored array (a view's padding); None: computed when first read

    def load(self, mmap: bool = True) -> np.ndarray:
        if self.array is not None:
            return self.array
        return np.load(self.array_path, mmap_mode="r" if mmap else None)

    def load_normalized(self) -> np.ndarray:
        array = np.array(self.load(mmap=True), dtype=np.float32)
        return self.intensity.apply_(array) if self.intensity is not None else array


@dataclass
class PreparedData:
    """The result of :func:`prepare_volumes`: usable volumes and the skipped ones with reasons."""

    volumes: list[PreparedVolume]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    cache_hits: int = 0
    prepared: int = 0  # entries this call made (the others came from the cache or from other processes)

    def summary(self) -> str:
        return (f"{len(self.volumes)} usable volume(s), {len(self.skipped)} skipped, "
                f"{self.cache_hits} from cache")


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


def preprocess_ref(ref: VolumeRef, prep: Preprocessing, modality: str,
                   non_hu: str) -> tuple[np.ndarray | None, str, IntensityMap | None]:
    """(stored array or None, note or skip reason, map to network input) for one volume, in the cache's
    compact form (:func:`pgl_zoo.pretrain.cache.encode`); raises nothing for bad data."""
    try:
        shown = sitk.ProcessObject.GetGlobalWarningDisplay()
        sitk.ProcessObject.SetGlobalWarningDisplay(False)  # e.g. non-uniform DICOM spacing
        try:
            image = ref.read()
        finally:
            sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    except PglZooError as exc:  # includes NaN voxels and unevenly spaced DICOM slices (read_image checks them)
        return None, (str(exc).split(": ", 1)[-1] if str(exc).startswith(str(ref.path)) else str(exc)), None
    raw = sitk.GetArrayViewFromImage(image)
    reason, is_non_hu = check_raw(raw, modality)
    if reason:
        return None, reason, None
    note = ""
    if is_non_hu:
        desc = non_hu_reason(raw, modality)
        if non_hu == "skip":
            return None, f"{desc}; skipped (--non-hu skip)", None
        if non_hu == "rescale" and prep.window is not None:
            lo, hi = float(raw.min()), float(raw.max())
            w0, w1 = prep.window
            image = sitk.ShiftScale(sitk.Cast(image, sitk.sitkFloat32), -lo, (w1 - w0) / (hi - lo))
            image = sitk.ShiftScale(image, w0, 1.0)
            note = f"{desc}; rescaled [min, max] -> window (--non-hu rescale)"
        else:
            note = f"{desc}; used as is (--non-hu keep)"
    # resampled scan values (float32), then the same intensity map preprocess_image would apply
    array = preprocess_image(image, replace(prep, window=None, normalization="none")).array
    if not np.isfinite(array).all():
        return None, "preprocessing produced NaN values", None
    mapping = intensity_map(array, prep.window, prep.normalization)
    stored, to_input = encode(array, mapping, modality)
    return stored, note, to_input


def cache_params(prep: Preprocessing, modality: str, non_hu: str) -> dict:
    """What an entry depends on besides the scan's bytes (and ``CACHE_VERSION``)."""
    return {"preprocessing": asdict(prep), "modality": modality, "non_hu": non_hu}


class UnreadableSource(Exception):
    """A source that cannot be read (its reason is the message); not cached: it may be readable later."""


def prepare_one(ref: VolumeRef, folder: Path, params: dict, prep: Preprocessing, modality: str,
                non_hu: str) -> tuple[str | None, bool]:
    """Make the cache entry of ``ref`` unless another process holds its claim. Returns (the entry's key, or
    None when the source is held elsewhere; whether this call made the entry). Raises OSError when the
    cache cannot be written, UnreadableSource when the source cannot be read."""
    cache = PretrainCache(folder, params)
    with cache.claim(ref) as mine:
        if not mine:
            return None, False
        try:
            stat = stat_signature(ref)  # before the bytes are read: a file changed meanwhile is hashed again
            found = cache.lookup(ref)  # finished by another process since we looked
            if found is not None:
                return found.key, False
            key = content_key(ref, params)
        except OSError as exc:  # the source vanished or became unreadable since it was found: not the cache
            raise UnreadableSource(f"cannot be read ({exc.strerror or exc})") from None
        if cache.entry(key) is not None:  # the same bytes under another name or an older mtime
            cache.remember(ref, key, stat)
            return key, False
        array, note, to_input = preprocess_ref(ref, prep, modality, non_hu)
        cache.store(ref, key, stat, array, note, to_input)
        return key, True


def _worker_start() -> None:
    """A preparation worker: one ITK thread (the -j processes are the parallelism); Ctrl-C is the parent's."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def work_order(missing: list[int], share: tuple[int, int]) -> list[int]:
    """The order in which one of ``share = (rank, world)`` processes prepares the missing sources: its own
    share (every world-th, from its rank), then the others' from the end (to meet their owners late)."""
    rank, world = share
    own = missing[rank::world]
    mine = set(own)
    return own + [i for i in reversed(missing) if i not in mine]


def prepare_volumes(
    root: str | Path | list[str | Path],
    prep: Preprocessing,
    modality: str = "CT",
    non_hu: str = "skip",
    cache_dir: str | Path | None = None,
    warn: Callable[[str], None] | None = None,
    jobs: int = 1,
    share: tuple[int, int] = (0, 1),
    progress: bool = False,
) -> PreparedData:
    """Discover, check, preprocess and cache every volume under ``root`` (a folder, file or list).

    Cached sources are found by stat (:class:`pgl_zoo.pretrain.cache.PretrainCache`); the others are
    prepared by ``jobs`` processes (1: in this process). ``share = (rank, world)``: this call is one of
    ``world`` processes over the same cache folder (the ranks of a distributed run); each prepares its
    share first, then helps with the others', then waits for sources another process is preparing
    (by watching the cache, never in a collective). Every caller gets the same list, in discovery order.
    Interrupting loses no finished entry. ``warn`` receives one line per skipped or rescaled volume
    (default: ``warnings.warn``). Raises :class:`DataError` only when no usable volume remains. When
    the cache cannot be written (read-only or full disk) the volumes are kept in memory instead.
    """
    if non_hu not in NON_HU_POLICIES:
        raise DataError(f"--non-hu must be one of {', '.join(NON_HU_POLICIES)}, got {non_hu!r}")
    warn = warn or (lambda msg: warnings.warn(msg, stacklevel=3))
    max_voxels()  # a bad $PGL_ZOO_MAX_VOXELS is one error, not a reason to skip every volume
    roots = root if isinstance(root, list) else [root]
    params = cache_params(prep, modality, non_hu)
    cache = PretrainCache(cache_dir if cache_dir is not None else default_cache_dir(), params)
    refs: list[VolumeRef] = []
    for r in roots:
        refs.extend(discover_volumes(r, warn=warn, list_series=cache.dicom_series))
    if not refs:
        raise DataError(f"{', '.join(map(str, roots))}: no volumes found (.nii, .nii.gz, .nrrd, .mha, .mhd, DICOM)")
    results: list[Entry | PreparedVolume | str | None] = [None] * len(refs)
    out = PreparedData(volumes=[])
    for i, ref in enumerate(refs):
        try:
            results[i] = cache.lookup(ref)
        except OSError as exc:  # dangling symbolic link, link loop, unreadable folder
            results[i] = f"cannot be read ({exc.strerror or exc})"
    out.cache_hits = sum(isinstance(r, Entry) for r in results)
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:
        _prepare_missing(cache, refs, results, work_order(missing, share), prep, modality, non_hu, jobs, warn,
                         progress, out)
    for ref, result in zip(refs, results, strict=True):
        if isinstance(result, str):
            out.skipped.append((str(ref), result))
            warn(f"{ref}: skipped: {result}")
        elif isinstance(result, PreparedVolume):
            out.volumes.append(result)
            if result.note:
                warn(f"{ref}: {result.note}")
        elif result.ok:
            out.volumes.append(PreparedVolume(str(ref), result.array_path, result.shape_zyx, result.note,
                                              intensity=result.intensity, minimum=result.minimum))
            if result.note:
                warn(f"{ref}: {result.note}")
        else:
            out.skipped.append((str(ref), result.note))
            warn(f"{ref}: skipped: {result.note}")
    if not out.volumes:
        raise DataError(
            f"{', '.join(map(str, roots))}: no usable volume among {len(refs)} found "
            f"({len(out.skipped)} skipped; see the warnings above; --non-hu rescale or keep uses non-HU CT)"
        )
    return out


def _prepare_missing(cache: PretrainCache, refs: list[VolumeRef], results: list, order: list[int],
                     prep: Preprocessing, modality: str, non_hu: str, jobs: int, warn, progress: bool,
                     out: PreparedData) -> None:
    """Fill ``results[i]`` for every i in ``order``: an Entry, or an in-memory PreparedVolume / skip reason
    when the cache cannot be written."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(order), unit="scan", desc="prepare", dynamic_ncols=True)

    def done(i: int, key: str, made: bool) -> None:
        results[i] = cache.entry(key)
        out.prepared += made
        if bar is not None:
            bar.update(1)

    def attempt(i: int) -> tuple[str | None, bool]:
        try:
            return prepare_one(refs[i], cache.folder, cache.params, prep, modality, non_hu)
        except UnreadableSource as exc:
            results[i] = str(exc)
            return "", False

    held: list[int] = []
    try:
        try:
            cache.ensure_writable()
            if jobs > 1 and len(order) > 1:
                with ProcessPoolExecutor(min(jobs, len(order)), mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_worker_start) as pool:
                    futures = {pool.submit(prepare_one, refs[i], cache.folder, cache.params, prep, modality,
                                           non_hu): i for i in order}
                    for future in as_completed(futures):
                        try:
                            key, made = future.result()
                        except UnreadableSource as exc:
                            results[futures[future]] = str(exc)
                            continue
                        if key is None:
                            held.append(futures[future])
                        else:
                            done(futures[future], key, made)
            else:
                for i in order:
                    key, made = attempt(i)
                    if key is None:
                        held.append(i)
                    elif key:
                        done(i, key, made)
            while held:  # sources other processes are preparing: wait for them, or take over a dead one's
                time.sleep(POLL_S)
                waiting = []
                for i in held:
                    try:
                        entry = cache.lookup(refs[i])
                    except OSError as exc:
                        results[i] = f"cannot be read ({exc.strerror or exc})"
                        continue
                    key, made = (entry.key, False) if entry is not None else attempt(i)
                    if key is None:
                        waiting.append(i)
                    elif key:
                        done(i, key, made)
                held = waiting
        except OSError as exc:  # full or read-only disk: go on without the cache
            warn(f"cache {cache.folder} cannot be written ({exc.strerror or exc}); continuing without a cache "
                 "(volumes kept in memory)")
            for i in order:
                if results[i] is None:
                    array, note, to_input = preprocess_ref(refs[i], prep, modality, non_hu)
                    results[i] = (PreparedVolume(str(refs[i]), None, tuple(array.shape), note, array=array,
                                                 intensity=to_input) if array is not None else note)
    finally:
        if bar is not None:
            bar.close()
