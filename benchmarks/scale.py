"""The pretraining data path at archive scale, simulated on this machine (issue 21).

Builds an archive of N scans from the real CT in ``../shared/data/ct`` (OpenKBP head-and-neck and LCTSC
chest scans): each scan is a random crop of a real scan, resampled to a random spacing (0.9-1.1 x its own
per axis) and written as its own NIfTI file, so every file's content differs. Then, for each N (default
100, 1,000, 5,000), measured side by side in one run:

* preparation (``prepare_volumes``, what ``pgl-zoo prepare`` runs) into an empty cache with -j 1 and -j 2;
* restart with the full cache, in a fresh process, as ``pgl-zoo pretrain`` starts (stat index), against
  hashing every byte of every file (what every start did before cache version 4; its rate in MB/s
  gives the cost for a real archive, whose scans are about 100 times larger than these crops);
* the training process: resident memory (peak RSS) after preparing the list and streaming 200 view pairs
  across the archive, and the data rate (view pairs per second, 0 loader workers);
* the cache's bytes per scan (int16) against the float32 cache it replaces, and the view rate of both on
  the same 100 scans.

Targets (issue 21; checked here, not in timed tests): restart with 5,000 cached scans < 30 s; memory flat
in N; preparation time linear in N and divided by the workers.

Usage::

    python benchmarks/scale.py --work /tmp/pgl_scale                 # 100, 1000, 5000 (about 25 min here)
    python benchmarks/scale.py --work /tmp/pgl_scale --sizes 20,60   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = Path(os.environ.get("PGL_ZOO_DATA", REPO.parent / "shared" / "data"))
PER_FOLDER = 100
CROP_ZYX = (48, 96, 96)  # voxels of a derived scan before its random resampling


def source_scans(limit: int = 8) -> list[Path]:
    ct = SHARED / "ct"
    found = sorted((ct / "openkbp_hn" / "imagesTr").glob("*.nii.gz"))[: limit // 2]
    found += sorted((ct / "lctsc_lungs" / "imagesTr").glob("*.nii.gz"))[: limit - len(found)]
    if not found:
        sys.exit(f"no real CT under {ct} (set PGL_ZOO_DATA)")
    return found


def build_archive(root: Path, n: int, per_folder: int = PER_FOLDER, seed: int = 0) -> list[Path]:
    """``n`` scans in folders of ``per_folder`` (root/000/scan_00000.nii.gz, ...); existing files are kept."""
    import SimpleITK as sitk

    from pgl_zoo.imaging import read_image

    sources = [read_image(p) for p in source_scans()]
    folders = []
    made = 0
    for i in range(n):
        folder = root / f"{i // per_folder:03d}"
        if not folders or folders[-1] != folder:
            folder.mkdir(parents=True, exist_ok=True)
            folders.append(folder)
        path = folder / f"scan_{i:05d}.nii.gz"
        if path.exists():
            continue
        rng = np.random.default_rng([seed, i])
        image = sources[i % len(sources)]
        size = np.array(image.GetSize())  # x, y, z
        crop = np.minimum(np.array(CROP_ZYX[::-1]), size)
        start = [int(rng.integers(0, s - c + 1)) for s, c in zip(size, crop, strict=True)]
        region = sitk.RegionOfInterest(image, [int(c) for c in crop], start)
        spacing = np.array(region.GetSpacing()) * rng.uniform(0.9, 1.1, 3)
        out_size = [max(8, int(round(c * s0 / s1))) for c, s0, s1 in zip(crop, region.GetSpacing(), spacing,
                                                                         strict=True)]
        resampled = sitk.Resample(region, out_size, sitk.Transform(), sitk.sitkLinear, region.GetOrigin(),
                                  spacing.tolist(), region.GetDirection(), -1024, sitk.sitkInt16)
        tmp = path.with_name("." + path.name)
        sitk.WriteImage(resampled, str(tmp), True)
        tmp.replace(path)
        made += 1
    print(f"archive: {n} scans in {len(folders)} folders under {root} ({made} written now)", flush=True)
    return folders


_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from pgl_zoo.cards import Preprocessing
from pgl_zoo.pretrain.data import prepare_volumes
from pgl_zoo.pretrain.dataset import StepSampler, ViewPairDataset, make_loader
args = json.loads(sys.argv[1])
prep = Preprocessing(**args["prep"])
t1 = time.perf_counter()
data = prepare_volumes(args["folders"], prep, "CT", "skip", args["cache"], warn=lambda m: None, jobs=args["jobs"])
t2 = time.perf_counter()
result = {"imports_s": t1 - t0, "prepare_s": t2 - t1, "volumes": len(data.volumes), "cache_hits": data.cache_hits,
          "prepared": data.prepared}
if args.get("stream"):
    dataset = ViewPairDataset(data.volumes, tuple(args["patch"]), seed=0)
    steps = args["stream"] // 2
    loader = make_loader(dataset, StepSampler(0, steps, 2), 0)
    t3 = time.perf_counter()
    for _ in loader:
        pass
    result["view_pairs_per_s"] = steps * 2 / (time.perf_counter() - t3)
result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(result), flush=True)
"""


def child(folders, cache: Path, jobs: int, prep: dict, stream: int = 0, patch=(32, 64, 64)) -> dict:
    """prepare_volumes (and optionally a view stream) in a fresh process, as a run's start would do it."""
    args = {"folders": [str(f) for f in folders], "cache": str(cache), "jobs": jobs, "prep": prep,
            "stream": stream, "patch": list(patch)}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(args)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(proc.stderr[-3000:])
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return {**json.loads(line[7:]), "process_s": time.perf_counter() - started}


def hash_everything(folders) -> float:
    """Seconds to sha256 every byte of every scan: what each start cost before cache version 4."""
    import hashlib

    started = time.perf_counter()
    for folder in folders:
        for path in sorted(Path(folder).glob("*.nii.gz")):
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return time.perf_counter() - started


def compact_vs_float32(folders, cache: Path, prep_dict: dict, pairs: int = 60) -> dict:
    """Bytes per scan and view-pair rate of the int16 cache against float32 copies of the same volumes."""
    from pgl_zoo.cards import Preprocessing
    from pgl_zoo.pretrain.data import PretrainVolume, prepare_volumes
    from pgl_zoo.pretrain.dataset import StepSampler, ViewPairDataset, make_loader

    data = prepare_volumes([str(f) for f in folders], Preprocessing(**prep_dict), "CT", "skip", cache,
                           warn=lambda m: None)
    f32_dir = cache.parent / (cache.name + "_float32")
    f32_dir.mkdir(exist_ok=True)
    f32 = []
    for i, v in enumerate(data.volumes):
        path = f32_dir / f"{i}.npy"
        if not path.exists():
            np.save(path, v.load_normalized())
        f32.append(PretrainVolume(v.source, path, v.shape_zyx))

    def rate(volumes) -> float:
        dataset = ViewPairDataset(volumes, (32, 64, 64), seed=0)
        loader = make_loader(dataset, StepSampler(0, pairs // 2, 2), 0)
        started = time.perf_counter()
        for _ in loader:
            pass
        return pairs / (time.perf_counter() - started)

    rates = {"int16": [], "float32": []}
    for _ in range(2):  # interleaved, so both see the same machine and page-cache state
        rates["int16"].append(rate(data.volumes))
        rates["float32"].append(rate(f32))
    int16_bytes = np.mean([v.array_path.stat().st_size for v in data.volumes])
    f32_bytes = np.mean([p.array_path.stat().st_size for p in f32])
    return {"scans": len(data.volumes), "bytes_per_scan_int16": float(int16_bytes),
            "bytes_per_scan_float32": float(f32_bytes), "size_ratio": float(int16_bytes / f32_bytes),
            "view_pairs_per_s_int16": max(rates["int16"]), "view_pairs_per_s_float32": max(rates["float32"])}


def main(argv: list[str] | None = None) -> None:
    from pgl_zoo.runs import atomic_write_json

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/pgl_scale"), help="archive and caches (GBs)")
    parser.add_argument("--sizes", default="100,1000,5000")
    parser.add_argument("--jobs", default="1,2")
    parser.add_argument("--per-folder", type=int, default=PER_FOLDER, help="scans per folder; sizes are multiples")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "scale.json")
    parser.add_argument("--keep", action="store_true", help="keep the archive and caches for a later run")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    jobs = [int(j) for j in args.jobs.split(",")]
    prep = {"spacing_xyz_mm": [2.0, 2.0, 3.0], "window": [-1024.0, 325.0], "normalization": "zscore"}
    if any(n % args.per_folder for n in sizes):
        parser.error("every size must be a multiple of --per-folder")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    archive = args.work / f"archive_{args.per_folder}"
    folders = build_archive(archive, max(sizes), args.per_folder)
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "platform": platform.platform()},
               "preprocessing": prep, "crop_zyx": CROP_ZYX, "sizes": {}}
    for n in sizes:
        subset = folders[: n // args.per_folder]
        row: dict = {}
        for j in jobs:
            cache = args.work / f"cache_n{n}_j{j}"
            shutil.rmtree(cache, ignore_errors=True)
            first = child(subset, cache, j, prep)
            row[f"prepare_j{j}"] = first
            print(f"N={n} -j {j}: prepared {first['prepared']} in {first['prepare_s']:.1f} s", flush=True)
        cache = args.work / f"cache_n{n}_j{jobs[0]}"
        row["restart"] = restart = child(subset, cache, 1, prep)  # a fresh process: imports + the list
        row["stream"] = stream = child(subset, cache, 1, prep, stream=200)
        archive_bytes = sum(p.stat().st_size for f in subset for p in Path(f).glob("*.nii.gz"))
        row["archive_bytes"] = archive_bytes
        row["hash_everything_s"] = hashed = hash_everything(subset)
        row["hash_mb_per_s"] = archive_bytes / 1e6 / max(hashed, 1e-9)
        print(f"N={n} restart: list in {restart['prepare_s']:.2f} s (process {restart['process_s']:.1f} s); hashing "
              f"every byte ({archive_bytes / 1e9:.2f} GB) {hashed:.1f} s; streaming: peak RSS "
              f"{stream['peak_rss_mib']:.0f} MiB, {stream['view_pairs_per_s']:.1f} view pairs/s", flush=True)
        results["sizes"][str(n)] = row
        atomic_write_json(args.out, results)
    results["compact_vs_float32"] = compact_vs_float32(folders[:1], args.work / "cache_compact", prep)
    print(json.dumps(results["compact_vs_float32"]), flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results["benchmark_peak_rss_mib"] = peak
    atomic_write_json(args.out, results)
    if not args.keep:
        for cache in args.work.glob("cache_*"):
            shutil.rmtree(cache, ignore_errors=True)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
