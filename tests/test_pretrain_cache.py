"""The pretraining cache at scale (issue 21): entries found again by stat alone (an unchanged file is not
read, a changed one is prepared again), parallel preparation equal to serial, ranks sharing the work
through claims, nothing finished lost when preparation is killed, and the compact int16/float16 storage
giving the float32 pipeline's values within the bound it states."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from _seg_helpers import DATA_DIR

from pgl_zoo.cards import Preprocessing
from pgl_zoo.datasets import sample_lungs_ct
from pgl_zoo.imaging.discover import VolumeRef
from pgl_zoo.imaging.read import read_image
from pgl_zoo.preprocessing.scan import preprocess_image
from pgl_zoo.pretrain.augment import IntensityAugment
from pgl_zoo.pretrain.cache import CACHE_VERSION, PretrainCache, quantisation_bound
from pgl_zoo.pretrain.data import PretrainVolume, cache_params, prepare_volumes
from pgl_zoo.pretrain.dataset import ViewPairDataset

CT = Preprocessing(spacing_xyz_mm=(3.0, 3.0, 3.0), window=(-1024.0, 325.0), normalization="zscore")
REPO = Path(__file__).resolve().parents[1]


def _scans(folder: Path, n: int, seed: int = 0, shape=(10, 18, 18)) -> Path:
    """``n`` small HU volumes (int16, 2 mm) and one label map, which is skipped."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        image = sitk.GetImageFromArray((rng.normal(0, 300, shape) - 400).astype(np.int16))
        image.SetSpacing((2.0, 2.0, 2.0))
        sitk.WriteImage(image, str(folder / f"scan_{i:03d}.nii.gz"))
    mask = np.zeros(shape, np.uint8)
    mask[2:6, 4:12, 4:12] = 1
    sitk.WriteImage(sitk.GetImageFromArray(mask), str(folder / "zz_mask.nii.gz"))
    return folder


def _arrays(data) -> list[np.ndarray]:
    return [np.asarray(v.load()) for v in data.volumes]


def test_an_unchanged_file_is_not_read_again_and_a_changed_one_is_prepared_again(tmp_path):
    folder = _scans(tmp_path / "data", 2)
    cache = tmp_path / "cache"
    first = prepare_volumes(folder, CT, cache_dir=cache, warn=lambda m: None)
    assert (len(first.volumes), len(first.skipped), first.prepared, first.cache_hits) == (2, 1, 3, 0)
    a, b = folder / "scan_000.nii.gz", folder / "scan_001.nii.gz"
    # a: same size and modification time, other bytes (garbage): trusted by stat, so never read
    st = a.stat()
    a.write_bytes(os.urandom(st.st_size))
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    # b: new content (another scan), so another size or mtime
    new = (np.random.default_rng(9).normal(0, 300, (10, 18, 18)) - 400).astype(np.int16)
    new[0, 0] = np.arange(18, dtype=np.int16) * 20 - 1100  # a known row, beyond the window at its low end
    image = sitk.GetImageFromArray(new)
    image.SetSpacing((2.0, 2.0, 2.0))
    time.sleep(0.01)
    sitk.WriteImage(image, str(b))
    second = prepare_volumes(folder, CT, cache_dir=cache, warn=lambda m: None)
    assert (second.cache_hits, second.prepared) == (2, 1)  # a and the mask from the cache; b again
    assert np.array_equal(second.volumes[0].load(), first.volumes[0].load())
    assert not np.array_equal(second.volumes[1].load(), first.volumes[1].load())
    assert second.volumes[1].load().min() == -1024  # the new scan's values, clipped to the window
    # the same bytes under a new modification time are hashed again and find their entry: nothing re-prepared
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = prepare_volumes(folder, CT, cache_dir=cache, warn=lambda m: None)
    assert third.cache_hits == 2 and third.volumes[1].array_path == second.volumes[1].array_path
    assert len(list(cache.glob("*.npy"))) == 3  # a, the first b, the second b; the mask has a record only


def test_parallel_preparation_equals_serial(tmp_path):
    folder = _scans(tmp_path / "data", 5)
    serial = prepare_volumes(folder, CT, cache_dir=tmp_path / "c1", warn=lambda m: None, jobs=1)
    parallel = prepare_volumes(folder, CT, cache_dir=tmp_path / "c2", warn=lambda m: None, jobs=2)
    assert [v.source for v in serial.volumes] == [v.source for v in parallel.volumes]
    assert serial.skipped == parallel.skipped and parallel.prepared == 6
    assert all(np.array_equal(x, y) and x.dtype == y.dtype for x, y in zip(_arrays(serial), _arrays(parallel),
                                                                           strict=True))
    assert [v.intensity for v in serial.volumes] == [v.intensity for v in parallel.volumes]


_SHARE_SCRIPT = """
import json, pathlib, sys, time
from pgl_zoo.cards import Preprocessing
from pgl_zoo.pretrain.data import prepare_volumes
rank, world, folder, cache = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
ready = pathlib.Path(folder).parent / "ready"
ready.mkdir(exist_ok=True)
(ready / str(rank)).touch()
while len(list(ready.iterdir())) < world:  # start together, as ranks launched by torchrun do
    time.sleep(0.01)
prep = Preprocessing(spacing_xyz_mm=(3.0, 3.0, 3.0), window=(-1024.0, 325.0), normalization="zscore")
data = prepare_volumes(folder, prep, cache_dir=cache, warn=lambda m: None, share=(rank, world))
print(json.dumps({"prepared": data.prepared, "sources": [v.source for v in data.volumes],
                  "arrays": [str(v.array_path) for v in data.volumes]}))
"""


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def test_ranks_share_the_preparation_and_get_the_same_list(tmp_path):
    folder = _scans(tmp_path / "data", 8, shape=(24, 48, 48))
    cache = tmp_path / "cache"
    script = tmp_path / "share.py"
    script.write_text(_SHARE_SCRIPT)
    procs = [subprocess.Popen([sys.executable, str(script), str(r), "2", str(folder), str(cache)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
             for r in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert outs[0]["sources"] == outs[1]["sources"] and len(outs[0]["sources"]) == 8
    assert outs[0]["arrays"] == outs[1]["arrays"]
    assert outs[0]["prepared"] + outs[1]["prepared"] == 9  # 8 scans and the mask, each prepared once
    assert min(outs[0]["prepared"], outs[1]["prepared"]) >= 2  # both worked (each starts with its own share)
    assert not list((cache / "claims").iterdir())  # every claim released


def test_a_claim_left_by_a_dead_process_is_taken_over(tmp_path):
    folder = _scans(tmp_path / "data", 1)
    params = cache_params(CT, "CT", "skip")
    cache = PretrainCache(tmp_path / "cache", params)
    ref = VolumeRef(folder / "scan_000.nii.gz")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    claim = cache._claim_path(ref)
    claim.parent.mkdir(parents=True)
    claim.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "time": time.time()}))
    data = prepare_volumes(folder / "scan_000.nii.gz", CT, cache_dir=tmp_path / "cache", warn=lambda m: None)
    assert data.prepared == 1 and not claim.exists()


def test_killing_preparation_loses_no_finished_scan(tmp_path):
    folder = _scans(tmp_path / "data", 40, shape=(24, 48, 48))
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "pgl_zoo.cli", "prepare", "--data", str(folder), "--cache-dir", str(cache),
           "--model", "pgl-ct-tiny", "-j", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(list((cache / "index").glob("*.json")) if (cache / "index").is_dir()
                                          else []) < 5:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # no clean-up of any kind
    proc.communicate()
    indexed = len(list((cache / "index").glob("*.json")))  # found again by stat alone
    # finished entries (record written last, after the array): the kill may fall between an entry's record
    # and its index record; the rerun then finds the entry by content and does not prepare it again
    finished = len(list(cache.glob("*.json")))
    assert indexed <= finished <= indexed + 1
    assert 5 <= indexed and finished < 41, "preparation finished before it could be killed; make the test set larger"
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    line = rerun.stdout.strip().splitlines()[-1]
    assert f"{indexed} from cache" in line and f"{41 - finished} prepared now" in line, line
    assert "40 usable volume(s), 1 skipped" in line
    assert len(list(cache.glob("*.json"))) == len(list((cache / "index").glob("*.json"))) == 41


def _one_prepared_scan(tmp_path: Path):
    """(folder, cache, the prepared data, its scan's record path, the record) for one scan and one mask."""
    folder = _scans(tmp_path / "data", 1)
    cache = tmp_path / "cache"
    first = prepare_volumes(folder, CT, cache_dir=cache, warn=lambda m: None)
    record = first.volumes[0].array_path.with_suffix(".json")
    return folder, cache, first, record, json.loads(record.read_text())


def test_an_entry_of_another_cache_version_is_never_read(tmp_path):
    folder, cache, first, record, meta = _one_prepared_scan(tmp_path)
    assert meta["version"] == CACHE_VERSION
    meta["version"] = "pgl-pretrain-cache-3"
    record.write_text(json.dumps(meta))
    np.save(first.volumes[0].array_path, np.zeros((3, 3, 3), np.float32))  # what an old reader might misread
    second = prepare_volumes(folder, CT, cache_dir=cache, warn=lambda m: None)
    assert second.prepared == 1 and second.volumes[0].load().shape == first.volumes[0].shape_zyx


@pytest.fixture(scope="module")
def real_ct() -> Path:
    return sample_lungs_ct().images[0]


def test_the_compact_cache_gives_the_float32_input_within_its_bound(tmp_path, real_ct):
    prep = Preprocessing(spacing_xyz_mm=(2.5, 2.5, 4.0), window=(-1024.0, 325.0), normalization="zscore")
    data = prepare_volumes(real_ct, prep, cache_dir=tmp_path / "cache", warn=lambda m: None)
    volume = data.volumes[0]
    stored = volume.load()
    assert stored.dtype == np.int16
    reference = preprocess_image(read_image(real_ct), prep).array  # what the float32 cache (version 3) held
    bound = quantisation_bound("int16", volume.intensity, 0.0)
    assert 0 < bound < 2e-3  # 0.5 HU over the window's standard deviation
    diff = np.abs(volume.load_normalized() - reference)
    assert diff.max() <= bound * 1.0001 + 1e-5
    assert diff.max() > 0  # the rounding is real, not a float32 cache under another name
    assert stored.nbytes * 2 == reference.nbytes
    # per view: the dataset's views from int16 + map equal the float32 volume's views within the bound
    # (before intensity augmentation, whose contrast and gamma would scale the difference)
    float_volume = PretrainVolume("float32", None, reference.shape, array=reference)
    plain = IntensityAugment(noise_p=0, blur_p=0, brightness_p=0, contrast_p=0, gamma_p=0)
    compact = ViewPairDataset([volume], (16, 32, 32), seed=4, augment=plain)
    full = ViewPairDataset([float_volume], (16, 32, 32), seed=4, augment=plain)
    for g in range(3):
        for x, y in zip(compact[g][:2], full[g][:2], strict=True):
            assert torch.max(torch.abs(x - y)) <= bound * 1.0001 + 1e-5


def test_mri_is_stored_as_float16_network_input(tmp_path):
    rng = np.random.default_rng(1)
    image = sitk.GetImageFromArray(rng.gamma(2.0, 150.0, (12, 20, 20)).astype(np.float32))
    path = tmp_path / "t1.nii.gz"
    sitk.WriteImage(image, str(path))
    prep = Preprocessing(spacing_xyz_mm=None, window=None, normalization="zscore")
    data = prepare_volumes(path, prep, "MRI", "keep", tmp_path / "cache", warn=lambda m: None)
    volume = data.volumes[0]
    assert volume.load().dtype == np.float16 and (volume.intensity.scale, volume.intensity.shift) == (1.0, 0.0)
    reference = preprocess_image(read_image(path), prep).array
    bound = quantisation_bound("float16", volume.intensity, float(np.abs(reference).max()))
    assert np.abs(volume.load_normalized() - reference).max() <= bound


def test_a_dicom_folder_is_listed_and_read_once(tmp_path):
    source = DATA_DIR / "ct" / "chest_dicom_series"
    if not source.is_dir():
        pytest.skip(f"real data folder {source} is absent (it sits beside the checkout in CI)")
    import shutil

    folder = tmp_path / "series"
    shutil.copytree(source, folder)
    first = prepare_volumes(folder, CT, cache_dir=tmp_path / "cache", warn=lambda m: None)
    assert len(first.volumes) == 1 and first.prepared == 1
    # every file's bytes replaced (size and mtime kept): neither the series listing nor the entry reads them
    for path in folder.iterdir():
        st = path.stat()
        path.write_bytes(b"\0" * st.st_size)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = prepare_volumes(folder, CT, cache_dir=tmp_path / "cache", warn=lambda m: None)
    assert (second.cache_hits, second.prepared) == (1, 0)
    assert np.array_equal(second.volumes[0].load(), first.volumes[0].load())
    # a file added to the folder: listed (and hashed) again, and the zeroed files are no series any more
    (folder / "new.dcm").write_bytes(b"\0" * 10)
    with pytest.raises(Exception, match="no volumes found|no usable volume"):
        prepare_volumes(folder, CT, cache_dir=tmp_path / "cache", warn=lambda m: None)


def test_a_damaged_record_is_prepared_again_not_misread(tmp_path):
    folder, cache, first, record, meta = _one_prepared_scan(tmp_path)
    del meta["intensity"]  # a record cut short by hand or by another tool
    record.write_text(json.dumps(meta))
    index = next((cache / "index").glob("[0-9a-f]*.json"))
    entry = json.loads(index.read_text())
    second = prepare_volumes(folder, CT, cache_dir=cache, warn=lambda m: None)
    assert second.prepared == 1 and second.volumes[0].intensity == first.volumes[0].intensity
    entry["key"] = "../" + entry["key"]  # an index pointing outside the cache is never followed
    index.write_text(json.dumps(entry))
    third = prepare_volumes(folder, CT, cache_dir=cache, warn=lambda m: None)
    assert third.prepared == 0 and third.cache_hits == 1  # the same bytes: its own entry, found by content
