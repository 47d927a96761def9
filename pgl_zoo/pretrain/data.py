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
values, and piecewise constant: see :mod:`pgl_zoo.imaging.scan_checks`; segmentation masks should not
be trained on) and, for CT, scans not in HU when
the policy says so. Non-HU detection (CT only): minimum above ``NON_HU_MIN`` (-500), i.e. no air,
as in uint8 0..255 or windowed scans. Policies: ``skip`` (default), ``rescale`` (map the scan's own
[min, max] linearly onto the window, an approximation), ``keep`` (use the values as they are).
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..cards import Preprocessing
from ..errors import DataError, PglZooError
from ..imaging.discover import VolumeRef, discover_volumes
from ..imaging.header_checks import max_voxels
from ..imaging.scan_checks import label_map_reason, non_hu_reason
from ..messages import caveat
from ..preprocessing.intensity import IntensityMap, intensity_map
from ..preprocessing.scan import preprocess_image
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
MIN_POOL_SCANS = 4  # fewer uncached scans are prepared in this process (starting -j workers costs 1-2 s)


@dataclass
class PretrainVolume:
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

    volumes: list[PretrainVolume]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    cache_hits: int = 0
    prepared: int = 0  # entries this call made (the others came from the cache or from other processes)

    def summary(self) -> str:
        return (f"{len(self.volumes)} usable volume(s), {len(self.skipped)} skipped, "
                f"{self.cache_hits} from cache")


def check_raw(array: np.ndarray, modality: str) -> tuple[str | None, bool]:
    """(reason to skip or None, is_non_hu) for a raw (z, y, x) array as read from disk (the label-map and
    non-HU checks are :mod:`pgl_zoo.imaging.scan_checks`' ``label_map_reason`` and ``non_hu_reason``, which
    ``segment`` uses too)."""
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
    (default: :func:`pgl_zoo.messages.caveat`). Raises :class:`DataError` only when no usable volume remains. When
    the cache cannot be written (read-only or full disk) the volumes are kept in memory instead.
    """
    if non_hu not in NON_HU_POLICIES:
        raise DataError(f"--non-hu must be one of {', '.join(NON_HU_POLICIES)}, got {non_hu!r}")
    warn = warn or (lambda msg: caveat(msg, stacklevel=3))
    max_voxels()  # a bad $PGL_ZOO_MAX_VOXELS is one error, not a reason to skip every volume
    roots = root if isinstance(root, list) else [root]
    cache = PretrainCache(cache_dir if cache_dir is not None else default_cache_dir(),
                          cache_params(prep, modality, non_hu))
    refs: list[VolumeRef] = []
    for r in roots:
        refs.extend(discover_volumes(r, warn=warn, list_series=cache.dicom_series))
    if not refs:
        raise DataError(f"{', '.join(map(str, roots))}: no volumes found (.nii, .nii.gz, .nrrd, .mha, .mhd, DICOM)")
    work = _Preparation(cache, refs, prep, modality, non_hu)
    missing = work.look_up()
    if missing:
        work.prepare(work_order(missing, share), jobs, warn, progress)
    out = work.collect(warn)
    if not out.volumes:
        raise DataError(
            f"{', '.join(map(str, roots))}: no usable volume among {len(refs)} found "
            f"({len(out.skipped)} skipped; see the warnings above; --non-hu rescale or keep uses non-HU CT)"
        )
    return out


class _Preparation:
    """The state of one :func:`prepare_volumes` call: ``results[i]`` for source ``refs[i]`` is None (not yet
    known), an :class:`Entry` of the cache, a skip reason, or an in-memory :class:`PretrainVolume` (when the
    cache cannot be written)."""

    def __init__(self, cache: PretrainCache, refs: list[VolumeRef], prep: Preprocessing, modality: str,
                 non_hu: str) -> None:
        self.cache, self.refs = cache, refs
        self.options = (prep, modality, non_hu)
        self.results: list[Entry | PretrainVolume | str | None] = [None] * len(refs)
        self.cache_hits = self.prepared = 0
        self.bar = None

    def look_up(self) -> list[int]:
        """Fill the results the cache holds (by stat); returns the indices still missing."""
        for i, ref in enumerate(self.refs):
            try:
                self.results[i] = self.cache.lookup(ref)
            except OSError as exc:  # dangling symbolic link, link loop, unreadable folder
                self.results[i] = f"cannot be read ({exc.strerror or exc})"
        self.cache_hits = sum(isinstance(r, Entry) for r in self.results)
        return [i for i, r in enumerate(self.results) if r is None]

    def prepare(self, order: list[int], jobs: int, warn, progress: bool) -> None:
        """Prepare the sources ``order`` names (``jobs`` processes), then wait for those held by others; on a
        cache that cannot be written, keep the rest in memory."""
        if progress:
            from ..progress import progress_bar

            self.bar = progress_bar(total=len(order), unit="scan", desc="prepare", dynamic_ncols=True)
        try:
            self.cache.ensure_writable()
            pool = jobs > 1 and len(order) >= MIN_POOL_SCANS
            held = self._in_pool(order, jobs) if pool else self._here(order)
            self._wait_for(held)
        except OSError as exc:  # full or read-only disk: go on without the cache
            warn(f"cache {self.cache.folder} cannot be written ({exc.strerror or exc}); continuing without a cache "
                 "(volumes kept in memory)")
            self._in_memory(order)
        finally:
            if self.bar is not None:
                self.bar.close()

    def _done(self, i: int, key: str | None, made: bool) -> bool:
        """Record source i's outcome; False when another process holds it."""
        if key is None:
            return False
        if key:  # "": unreadable, its reason already recorded
            self.results[i] = self.cache.entry(key)
            self.prepared += made
            if self.bar is not None:
                self.bar.update(1)
        return True

    def _attempt(self, i: int) -> tuple[str | None, bool]:
        try:
            return prepare_one(self.refs[i], self.cache.folder, self.cache.params, *self.options)
        except UnreadableSource as exc:
            self.results[i] = str(exc)
            return "", False

    def _here(self, order: list[int]) -> list[int]:
        return [i for i in order if not self._done(i, *self._attempt(i))]

    def _in_pool(self, order: list[int], jobs: int) -> list[int]:
        held = []
        with ProcessPoolExecutor(min(jobs, len(order)), mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_worker_start) as pool:
            futures = {pool.submit(prepare_one, self.refs[i], self.cache.folder, self.cache.params,
                                   *self.options): i for i in order}
            for future in as_completed(futures):
                i = futures[future]
                try:
                    outcome = future.result()
                except UnreadableSource as exc:
                    self.results[i], outcome = str(exc), ("", False)
                if not self._done(i, *outcome):
                    held.append(i)
        return held

    def _wait_for(self, held: list[int]) -> None:
        """Sources other processes are preparing: wait for their entries, or take over a dead process's claim."""
        while held:
            time.sleep(POLL_S)
            waiting = []
            for i in held:
                try:
                    entry = self.cache.lookup(self.refs[i])
                except OSError as exc:
                    self.results[i] = f"cannot be read ({exc.strerror or exc})"
                    continue
                if not self._done(i, *((entry.key, False) if entry is not None else self._attempt(i))):
                    waiting.append(i)
            held = waiting

    def _in_memory(self, order: list[int]) -> None:
        for i in order:
            if self.results[i] is None:
                array, note, to_input = preprocess_ref(self.refs[i], *self.options)
                self.results[i] = (PretrainVolume(str(self.refs[i]), None, tuple(array.shape), note, array=array,
                                                  intensity=to_input) if array is not None else note)

    def collect(self, warn) -> PreparedData:
        """The usable volumes and the skipped sources, in discovery order, with one warning line for each
        skipped or noted source."""
        out = PreparedData(volumes=[], cache_hits=self.cache_hits, prepared=self.prepared)
        for ref, result in zip(self.refs, self.results, strict=True):
            if isinstance(result, Entry):
                result = (PretrainVolume(str(ref), result.array_path, result.shape_zyx, result.note,
                                         intensity=result.intensity, minimum=result.minimum)
                          if result.ok else result.note)
            if isinstance(result, str):
                out.skipped.append((str(ref), result))
                warn(f"{ref}: skipped: {result}")
                continue
            out.volumes.append(result)
            if result.note:
                warn(f"{ref}: {result.note}")
        return out
