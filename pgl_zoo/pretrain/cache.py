"""The pretraining cache: one entry per (scan content, preprocessing), found again by file stat alone.

Layout under the cache folder (``--cache-dir``, default ``$PGL_ZOO_CACHE`` or
``~/.cache/pgl_zoo/preprocessed``)::

    <key>.npy                  the preprocessed volume, (z, y, x): int16 scan units or float16 network input
    <key>.json                 its record: source, status (ok / skipped) and note, shape, stored dtype and
                               minimum, the intensity map that turns stored values into network input, parameters
    index/<source id>.json     where a source was last seen: its files' (name, size, mtime in ns) and key
    index/series-<folder>.json a DICOM folder's series UIDs, with its files' stat
    claims/<source id>.claim   held (host, pid, time) while one process prepares that source

``key`` is sha256 over ``CACHE_VERSION``, the preprocessing parameters, the DICOM series UID and the
bytes of every file of the scan. It is computed once, when the entry is made; a later run looks the
source up in ``index/`` and trusts the entry while every file still has the size and modification
time recorded there (as make and rsync decide what changed). So a restart over 10,000
cached scans reads 10,000 small index records, not terabytes. A changed file (other size or mtime) is
hashed again: same bytes, same entry; new bytes, a new entry.

Compact storage (``CACHE_VERSION`` 4): CT is stored as int16 scan values (HU), resampled (linear,
float32) then clipped to the window (if any) and rounded, when they fit the int16 range: the rounding
moves a value by at most 0.5 HU, i.e. at most ``0.5 * scale`` in network units (for the zscore of a
CT clipped to [-1024, 325]: about 0.001). Everything else (MRI, CT beyond int16) is stored as the
float16 network input (relative error at most 2**-11). The intensity map ``value * scale + shift`` is
applied per view
(:class:`pgl_zoo.pretrain.dataset.ViewPairDataset`), as ``segment`` applies it per window. Entries of
older versions have other keys: they are never read, and their files can be deleted.

Claims: a source is prepared by one process at a time, whichever ranks, ``-j`` workers or concurrent
``pgl-zoo prepare`` runs share the folder. A claim is stale when its process is gone (same host) or
older than ``CLAIM_STALE_S`` (another host); a stale claim is taken over.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..atomic import atomic_write
from ..imaging.dicom import list_dicom_series
from ..imaging.discover import VolumeRef
from ..preprocessing.intensity import IntensityMap
from ..runs import atomic_write_json

CACHE_VERSION = "pgl-pretrain-cache-4"
CLAIM_STALE_S = 3600.0
INT16_RANGE = (-32768.0, 32767.0)


def default_cache_dir() -> Path:
    """``$PGL_ZOO_CACHE`` or ``~/.cache/pgl_zoo/preprocessed``."""
    env = os.environ.get("PGL_ZOO_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "pgl_zoo" / "preprocessed"


def params_digest(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------- sources: files, stat, content


def content_files(ref: VolumeRef) -> list[Path]:
    """The files whose bytes make the scan: :meth:`VolumeRef.files`, except that a DICOM series is its own
    instances (read from their headers by GDCM: done once, when an entry is made)."""
    if ref.path.is_dir():
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(ref.path), ref.series_uid or "")
        return [Path(f) for f in files]
    return ref.files()


def stat_signature(ref: VolumeRef) -> list[list]:
    """[[name, size in bytes, mtime in ns], ...] of :meth:`VolumeRef.files` (a DICOM series: every file of its
    folder, so a change anywhere in the folder re-hashes it; raises OSError for a dangling link)."""
    out = []
    for path in ref.files():
        st = path.stat()
        out.append([path.name, st.st_size, st.st_mtime_ns])
    return out


def content_key(ref: VolumeRef, params: dict) -> str:
    """sha256 over ``CACHE_VERSION``, the parameters, the series UID and every content file's name and bytes."""
    h = hashlib.sha256()
    h.update(CACHE_VERSION.encode())
    h.update(json.dumps(params, sort_keys=True).encode())
    h.update((ref.series_uid or "").encode())
    for path in content_files(ref):
        h.update(path.name.encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- compact storage


def encode(array: np.ndarray, mapping: IntensityMap, modality: str) -> tuple[np.ndarray, IntensityMap]:
    """(stored array, map from stored values to network input) for a resampled float32 (z, y, x) volume in
    scan units and its intensity map (window, scale, shift). ``array`` is overwritten.

    CT whose values (clipped to the window, if any) lie inside the int16 range: int16 of the clipped, rounded
    values, map (scale, shift). Otherwise: float16 of the network input, identity map (float32 where
    float16 would overflow).
    """
    window = mapping.window
    if window is not None:
        fits = INT16_RANGE[0] <= window[0] and window[1] <= INT16_RANGE[1]
    else:
        fits = array.size > 0 and INT16_RANGE[0] <= float(array.min()) and float(array.max()) <= INT16_RANGE[1]
    if modality.upper() == "CT" and fits:
        if window is not None:
            np.clip(array, window[0], window[1], out=array)
        stored = np.rint(array).astype(np.int16)
        return stored, IntensityMap(None, mapping.scale, mapping.shift)
    mapping.apply_(array)
    stored = array.astype(np.float16)
    if not np.isfinite(stored).all():
        stored = array
    return stored, IntensityMap(None, 1.0, 0.0)


def quantisation_bound(stored_dtype: str, mapping: IntensityMap, max_abs_input: float) -> float:
    """The largest difference the stored form makes to a network input value (see :func:`encode`)."""
    if stored_dtype == "int16":
        return 0.5 * abs(mapping.scale)
    if stored_dtype == "float16":
        return max_abs_input * 2.0**-11
    return 0.0


# ---------------------------------------------------------------- the cache folder


@dataclass(frozen=True)
class Entry:
    """A cache entry as its record says: ``status`` ok or skipped; for ok, the array file and its map."""

    key: str
    source: str
    status: str
    note: str
    shape_zyx: tuple[int, int, int] | None
    array_path: Path | None
    intensity: IntensityMap | None
    minimum: float | None = None  # the stored array's smallest value (a view's padding), in stored units

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class PretrainCache:
    """One cache folder, seen with one set of preprocessing parameters."""

    def __init__(self, folder: str | Path, params: dict) -> None:
        self.folder = Path(folder)
        self.params = params
        self._digest = params_digest(params)

    # -- paths
    def source_id(self, ref: VolumeRef) -> str:
        where = f"{os.path.abspath(ref.path)}\0{ref.series_uid or ''}"  # links are not followed
        return hashlib.sha256(f"{CACHE_VERSION}\0{self._digest}\0{where}".encode()).hexdigest()[:40]

    def _index_path(self, ref: VolumeRef) -> Path:
        return self.folder / "index" / f"{self.source_id(ref)}.json"

    def _claim_path(self, ref: VolumeRef) -> Path:
        return self.folder / "claims" / f"{self.source_id(ref)}.claim"

    def ensure_writable(self) -> None:
        """Create the folder and its sub-folders; raises OSError when that fails."""
        for sub in ("index", "claims"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        probe = self.folder / "claims" / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()

    # -- discovery
    def dicom_series(self, folder: Path) -> list[str]:
        """:func:`pgl_zoo.imaging.dicom.list_dicom_series` of ``folder``, remembered while its files keep their size
        and modification time (GDCM reads every file's header to list a folder's series: about 1 ms a
        file, 40 minutes for 3 million slices, at every start without this)."""
        name = hashlib.sha256(os.path.abspath(folder).encode()).hexdigest()[:40]
        path = self.folder / "index" / f"series-{name}.json"
        files = stat_signature(VolumeRef(folder))  # the folder's listing, as for its series' entries
        try:
            record = json.loads(path.read_text())
            if isinstance(record, dict) and record.get("files") == files and isinstance(record.get("series"), list):
                return [str(uid) for uid in record["series"]]
        except (OSError, ValueError, RecursionError):
            pass
        series = list_dicom_series(folder)
        with contextlib.suppress(OSError):  # a read-only cache: listed again next time
            self._write_json(path, {"folder": str(folder), "files": files, "series": series})
        return series

    # -- lookup
    def entry(self, key: str) -> Entry | None:
        """The entry ``key`` when its record (and, for ok, its array file) exist and read as this version
        wrote them; None otherwise (a damaged or foreign record is prepared again, never misread)."""
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):  # a sha256, never a path
            return None
        try:
            meta = json.loads((self.folder / f"{key}.json").read_text())
            if not isinstance(meta, dict) or meta.get("version") != CACHE_VERSION:
                return None
            array_path = self.folder / f"{key}.npy"
            if meta.get("status") != "ok":
                return Entry(key, str(meta.get("source", "")), "skipped", str(meta.get("note", "")), None, None, None)
            if not array_path.is_file():
                return None
            m = meta["intensity"]
            shape = tuple(int(n) for n in meta["shape_zyx"])
            return Entry(key, str(meta["source"]), "ok", str(meta.get("note", "")), shape, array_path,
                         IntensityMap(None, float(m["scale"]), float(m["shift"])), float(meta["minimum"]))
        except (OSError, ValueError, RecursionError, KeyError, TypeError):
            return None

    def lookup(self, ref: VolumeRef) -> Entry | None:
        """The entry of ``ref`` when the index says its files are unchanged since the entry was made
        (stat only: nothing is read from the scan). Raises OSError for unreadable sources."""
        files = stat_signature(ref)  # first: an unreadable source raises, whether indexed or not
        try:
            record = json.loads(self._index_path(ref).read_text())
        except (OSError, ValueError, RecursionError):
            return None
        if not isinstance(record, dict) or record.get("files") != files:
            return None
        return self.entry(str(record.get("key", "")))

    # -- writing
    def store(self, ref: VolumeRef, key: str, stat: list[list], array: np.ndarray | None, note: str,
              intensity: IntensityMap | None) -> Entry:
        """Write the entry (array, then record) and the index record, each atomically."""
        array_path = self.folder / f"{key}.npy"
        if array is not None:
            def write_array(tmp: str) -> None:
                with open(tmp, "wb") as f:
                    np.save(f, array)
            atomic_write(array_path, write_array)
        meta: dict[str, Any] = {
            "version": CACHE_VERSION, "source": str(ref), "status": "ok" if array is not None else "skipped",
            "note": note, "shape_zyx": list(array.shape) if array is not None else None,
            "stored": str(array.dtype) if array is not None else None,
            "minimum": float(array.min()) if array is not None else None,
            "intensity": {"scale": intensity.scale, "shift": intensity.shift} if intensity is not None else None,
            "params": self.params}
        self._write_json(self.folder / f"{key}.json", meta)
        self.remember(ref, key, stat)
        entry = self.entry(key)
        if entry is None:  # verified: what was written reads back
            raise OSError(f"{self.folder / (key + '.json')}: the entry just written does not read back")
        return entry

    def remember(self, ref: VolumeRef, key: str, stat: list[list]) -> None:
        """Record that ``ref``, with files of this stat, has the entry ``key``."""
        self._write_json(self._index_path(ref), {"source": str(ref), "files": stat, "key": key})

    @staticmethod
    def _write_json(path: Path, data: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, data)

    # -- claims
    @contextlib.contextmanager
    def claim(self, ref: VolumeRef):
        """Yields True when this process holds the claim on ``ref`` (released on exit), False when
        another live process holds it."""
        path = self._claim_path(ref)
        path.parent.mkdir(parents=True, exist_ok=True)
        mine = _try_create(path)
        if not mine and _claim_is_stale(path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            mine = _try_create(path)
        try:
            yield mine
        finally:
            if mine:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


def _try_create(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}, f)
    return True


def _claim_is_stale(path: Path) -> bool:
    try:
        holder = json.loads(path.read_text())
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return True  # released meanwhile
    except (OSError, ValueError):
        return False  # being written: not stale
    if not isinstance(holder, dict):
        return True
    if holder.get("host") == socket.gethostname():
        return not _alive(int(holder.get("pid", -1)))
    return age > CLAIM_STALE_S


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
