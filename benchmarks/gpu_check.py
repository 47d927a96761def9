"""One prepared check of pgl-zoo on a lent GPU, in under 5 minutes (``bash benchmarks/gpu_check.sh`` runs it).

Measures, writes ``benchmarks/results/gpu_check.json`` after every measurement (atomically: a run cut short
still leaves what it measured) and prints a short table:

* **Pretraining views/s** of the ``pgl-ct`` architecture (PGL, local loss on the coarsest decoder level,
  the card's patch 32 x 64 x 64) at batch 4 and 16 view pairs: eager float32, eager with bf16 autocast
  (what ``pgl-zoo pretrain`` runs on CUDA) and ``torch.compile`` with bf16 (``--compile``). A step is the
  trainer's own ``train_step``; after a warm-up, steps run back to back in chunks of 5 with one host
  sync per chunk (as the trainer runs between logged steps); views/s = 2 x batch / median seconds per
  step. Peak GPU memory allocated is recorded per configuration.
* **The share of step time spent waiting on data** with 0, 4, 8 and 16 DataLoader workers: the trainer's
  loader (``make_loader``, pinned memory) feeding bf16 steps at batch 4, with a sync after every step so
  that the time spent in ``next(loader)`` is time the GPU sits idle; share = wait / (wait + step). The
  first ``workers x prefetch + 2`` batches (already queued) are not timed.
* **Segmentation against MONAI**: ``predict_label`` (what ``pgl-zoo segment`` runs) against MONAI's
  ``sliding_window_inference`` on the same network (``pgl-lungs-ct``, bundled), volume and settings
  (``compare_with_monai`` of benchmarks/inference.py): median seconds, speed ratio, agreement.

Data: the real CT of ../shared/data/ct (and LCTSC lung_006 for segmentation) when that folder and SimpleITK
are at hand, else synthetic volumes (a lent GPU machine has neither; the JSON says which). Every
measurement has a time cap and the run a budget (``--budget-s``); what does not fit, or what this machine
cannot do (bf16 and GPU memory on a CPU, MONAI or dynamic-network-architectures missing, a compiler
failure), is recorded as skipped with its reason instead of failing the run.

    python benchmarks/gpu_check.py                          # on the GPU machine (gpu_check.sh installs wheels)
    python benchmarks/gpu_check.py --device cpu --quick     # every branch, small sizes, in well under a minute
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

RESULTS = HERE / "results"
DATA = Path(os.environ.get("PGL_ZOO_DATA", HERE.parents[1] / "shared" / "data"))  # as the tests read it
LUNG_CT = DATA / "ct" / "lctsc_lungs" / "imagesTr" / "lung_006.nii.gz"


class Skipped(Exception):
    """A measurement this run cannot or should not make; the message is recorded as the reason."""


def ensure_simpleitk_importable(force_missing: bool = False) -> bool:
    """Whether SimpleITK is installed. pgl_zoo imports it at module level; without it (a lent GPU machine's
    image; its wheel is too large to carry) an empty stand-in satisfies those imports, and any real use
    fails loudly (the data then comes from synthetic arrays). ``force_missing``: take that path anyway."""
    if not force_missing:
        try:
            import SimpleITK  # noqa: F401

            return True
        except ImportError:
            pass
    sys.modules["SimpleITK"] = types.ModuleType("SimpleITK")
    return False


class Budget:
    """Seconds left of the run's budget, and caps for single measurements."""

    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()

    def cap(self, seconds: float) -> float:
        """``seconds`` or what is left, whichever is less; Skipped when almost nothing is left."""
        left = self.left()
        if left < 3:
            raise Skipped(f"time budget spent ({left:.0f} s left)")
        return min(seconds, left)

    def require(self, seconds: float, what: str) -> None:
        if self.left() < seconds:
            raise Skipped(f"time budget: {what} needs about {seconds:.0f} s, {self.left():.0f} s left")


class Results:
    """The JSON document, written atomically after every change."""

    def __init__(self, path: Path, meta: dict) -> None:
        self.path = path
        self.data: dict = {"meta": meta}
        self.started = time.perf_counter()

    def save(self) -> None:
        from pgl_zoo.runs import atomic_write_json

        self.data["meta"]["elapsed_s"] = round(time.perf_counter() - self.started, 1)
        atomic_write_json(self.path, self.data)

    def measure(self, where: dict, key: str, function) -> dict:
        """``where[key] = function()``, or {"skipped": reason} / {"error": message}; then save."""
        started = time.perf_counter()
        try:
            value = function()
            state = "done"
        except Skipped as reason:
            value = {"skipped": str(reason)}
            state = f"skipped: {reason}"
        except Exception as error:  # noqa: BLE001 - one failed measurement must not end the run
            traceback.print_exc()
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            value = {"error": f"{type(error).__name__}: {first}"}
            state = value["error"]
        _free_gpu_memory()  # the measurement's networks and batches are gone with its frame
        value.setdefault("wall_s", round(time.perf_counter() - started, 1))
        where[key] = value
        self.save()
        print(f"[{time.perf_counter() - self.started:5.0f} s] {key}: {state}", flush=True)
        return value


def _free_gpu_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _peak_reset(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device) -> dict:
    import torch

    if device.type != "cuda":
        return {"peak_memory": {"skipped": "GPU memory: CUDA only"}}
    return {"peak_memory_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
            "peak_reserved_mib": round(torch.cuda.max_memory_reserved(device) / 2**20, 1)}


def environment(args, simpleitk: bool) -> dict:
    import torch

    def version(name: str) -> str | None:
        if importlib.util.find_spec(name) is None:
            return None
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "installed"

    meta = {"command": "python " + " ".join(sys.argv), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "status": "running", "quick": args.quick, "budget_s": args.budget_s, "device": args.device,
            "python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "packages": {"dynamic_network_architectures": version("dynamic_network_architectures"),
                         "monai": version("monai"), "SimpleITK": "installed" if simpleitk else None}}
    if args.device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(args.device))
        meta.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                    bf16_supported=torch.cuda.is_bf16_supported())
    return meta


# ----------------------------------------------------------------------------------- pretraining
class PretrainBench:
    """The pretraining measurements of one network and patch on one device (views/s, memory, data wait)."""

    def __init__(self, args, budget: Budget, device, volumes, source: str) -> None:
        from pgl_zoo.arch import stage_widths
        from pgl_zoo.pretrain.dataset import ViewPairDataset
        from pgl_zoo.pretrain.trainer import default_local_levels
        from pgl_zoo.registry import get_card

        self.args, self.budget, self.device, self.source = args, budget, device, source
        self.card = get_card(args.model)
        self.patch = tuple(args.patch_size) if args.patch_size else tuple(self.card.patch_size_zyx)
        self.levels = default_local_levels(len(stage_widths(self.card.arch)))
        self.dataset = ViewPairDataset(volumes, self.patch, seed=0)
        self.cuda = device.type == "cuda"

    def describe(self) -> dict:
        return {"model": self.card.name, "patch_zyx": list(self.patch), "local_levels": list(self.levels),
                "local_weight": 1.0, "data": self.source,
                "step": "train_step: both views through online and target, PGL losses, backward, clipping at 1, "
                        "AdamW, EMA update"}

    def views_per_s(self, batch_size: int, amp: bool, compile_: bool) -> dict:
        """Steady views/s of one configuration, its first step (compiling, when compiled) and peak memory."""
        import torch
        from pretrain_step import make_nets, one_batch, steady_step_seconds

        if amp and not self.cuda:
            raise Skipped("bf16 autocast: CUDA only (train_step's amp; the CPU runs float32)")
        if compile_:
            self.budget.require(self.args.compile_estimate_s, "compiling the training step")
        cap = self.budget.cap(self.args.step_seconds)
        args, device = self.args, self.device
        torch.manual_seed(0)
        batch = one_batch(self.dataset, batch_size, device)
        _peak_reset(device)
        if compile_:
            torch._dynamo.reset()  # as in a new process: this shape alone, no automatic dynamic shapes
        online, target, optimizer, model = make_nets(self.card, self.levels, device, compile_, args.compile_backend)

        def steps(n: int, seconds: float = float("inf"), chunk: int = 1) -> list[float]:
            return steady_step_seconds(online, target, optimizer, batch, 1.0, device, model, amp, max_steps=n,
                                       max_seconds=seconds, chunk=chunk)

        first_s = steps(1)[0]
        steps(1)  # warm-up
        per_step = steps(args.max_steps, cap, args.chunk)
        median = statistics.median(per_step)
        record = {"batch": batch_size, "amp": "bf16" if amp else "float32", "compiled": compile_,
                  "views_per_s": round(2 * batch_size / median, 2), "step_ms_median": round(median * 1000, 2),
                  "step_ms_min": round(min(per_step) * 1000, 2), "timed_steps": args.chunk * len(per_step),
                  "first_step_s": round(first_s, 2), **_peak(device)}
        if compile_:
            record["compile_backend"] = args.compile_backend
        return record

    def data_wait(self, workers: int, nets) -> dict:
        """Share of step time spent in ``next(loader)`` with ``workers`` workers (see the module docstring)."""
        from pgl_zoo.pretrain.dataset import StepSampler, make_loader
        from pgl_zoo.pretrain.losses import cosine_momentum
        from pgl_zoo.pretrain.trainer import train_step

        online, target, optimizer = nets
        cap = self.budget.cap(self.args.wait_seconds)
        batch_size, device = self.args.batch_sizes[0], self.device
        skip = workers * 4 + 2  # the batches the workers queue before the first step (make_loader's prefetch 4)
        most = self.args.max_steps * 4
        started = time.perf_counter()
        loader = make_loader(self.dataset, StepSampler(0, skip + most + 1, batch_size), workers, pin_memory=self.cuda)
        batches = iter(loader)
        waits, steps, timing_from = [], [], None
        try:
            for i in range(skip + most + 1):
                t0 = time.perf_counter()
                view_a, view_b, to_a, to_b = next(batches)
                batch = (view_a.to(device, non_blocking=True), view_b.to(device, non_blocking=True), to_a, to_b)
                t1 = time.perf_counter()
                losses = train_step(online, online, target, optimizer, batch, 1.0, cosine_momentum(i, 1000), 1.0,
                                    None, self.cuda)
                losses.total.detach().item()  # synchronised: the GPU idles from here until the next step
                t2 = time.perf_counter()
                if timing_from is None:  # queued batches are not timed, unless queueing took half the cap
                    if i + 1 >= skip or t2 - started > cap / 2:
                        timing_from = t2
                    continue
                waits.append(t1 - t0)
                steps.append(t2 - t1)
                if t2 - timing_from > cap or len(steps) >= most:
                    break
        finally:
            del batches  # ends the workers
        if not steps:
            raise Skipped(f"no step timed within {cap:.0f} s")
        wait, step = sum(waits), sum(steps)
        return {"workers": workers, "wait_share": round(wait / (wait + step), 4),
                "wait_ms_median": round(statistics.median(waits) * 1000, 2),
                "step_ms_median": round(statistics.median(steps) * 1000, 2), "timed_steps": len(steps),
                "views_per_s": round(2 * batch_size * len(steps) / (wait + step), 2)}


def pretraining(args, results: Results, bench: PretrainBench, compiled: bool) -> None:
    """Views/s at each batch size: eager float32 and bf16, or (``compiled``) compiled with bf16 on CUDA."""
    section = results.data.setdefault("pretrain", {**bench.describe(), "runs": {}})
    runs = section["runs"]
    for batch_size in args.batch_sizes:
        if compiled:
            amp = bench.cuda
            key = f"b{batch_size}-compiled-{'bf16' if amp else 'fp32'}"
            results.measure(runs, key, lambda b=batch_size, a=amp: bench.views_per_s(b, a, True))
            continue
        for amp in (False, True):
            key = f"b{batch_size}-{'bf16' if amp else 'fp32'}"
            results.measure(runs, key, lambda b=batch_size, a=amp: bench.views_per_s(b, a, False))


def data_wait(args, results: Results, bench: PretrainBench) -> None:
    import torch
    from pretrain_step import make_nets

    section = results.data.setdefault("data_wait", {})
    section.update(batch=args.batch_sizes[0], amp="bf16" if bench.cuda else "float32", data=bench.source,
                   definition="share = time in next(loader) / (that + the step until synchronised); the GPU idles "
                              "while the loop waits", runs={})
    torch.manual_seed(0)
    online, target, optimizer, _ = make_nets(bench.card, bench.levels, bench.device)
    for workers in args.workers:
        results.measure(section["runs"], f"workers-{workers}",
                        lambda w=workers: bench.data_wait(w, (online, target, optimizer)))


# ----------------------------------------------------------------------------------- segmentation
def segment(args, budget: Budget, device, simpleitk: bool) -> dict:
    import numpy as np

    if importlib.util.find_spec("monai") is None:
        raise Skipped("MONAI is not installed (gpu_check.sh installs its wheel from .whl/ when carried)")
    from inference import compare_with_monai

    from pgl_zoo.api import load_segmentation_model

    budget.require(args.segment_seconds, "the segmentation check")
    network, card = load_segmentation_model(args.segment_model, map_location=str(device))
    network.eval()
    roi = tuple(card.patch_size_zyx)
    if LUNG_CT.is_file() and simpleitk and not args.quick:
        from pgl_zoo.imaging.read import read_image
        from pgl_zoo.preprocessing.scan import preprocess_image

        array = preprocess_image(read_image(str(LUNG_CT)), card.preprocessing).array
        source = f"{LUNG_CT.name} preprocessed as the card says"
    else:
        shape = tuple(args.segment_shape)
        array = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        source = f"synthetic {'x'.join(map(str, shape))} ({'--quick' if args.quick else 'no real CT or SimpleITK'})"
    result = compare_with_monai(network, array, roi, str(device), repeats=args.repeats, compile_=False,
                                alone=False, matmul_n=512 if args.quick else 2048)
    median = {name: statistics.median(t) for name, t in result["times"].items()}
    monai_4 = median["MONAI, batch 4"]
    out = {"model": card.name, "volume": source, "shape_zyx": list(array.shape), "window_zyx": list(roi),
           "overlap": 0.5, "windows": result["windows"], "gflop_per_pass": round(result["flops"] / 1e9, 2),
           "median_s": {name: round(t, 4) for name, t in median.items()},
           "speed_vs_monai_batch_4": {name: round(monai_4 / t, 3) for name, t in median.items()
                                      if not name.startswith("MONAI")},
           "max_probability_difference": result["max_probability_difference"],
           "identical_labels": result["identical_labels"],
           "matmul_limit_gflops": round(result["limit"], 1), "repeats": args.repeats,
           "compiled": {"skipped": "left out to keep the check under 5 minutes; python benchmarks/inference.py "
                                   "--device cuda measures it"}}
    return out


# ----------------------------------------------------------------------------------- report
def table(data: dict) -> str:
    lines = []
    pre = data.get("pretrain", {})
    if pre:
        lines.append(f"pretraining {pre.get('model')} patch {'x'.join(map(str, pre.get('patch_zyx', [])))}: "
                     "views/s (ms/step, peak MiB)")
        for key, r in pre.get("runs", {}).items():
            if "views_per_s" in r:
                memory = r.get("peak_memory_mib", "-")
                lines.append(f"  {key:22s} {r['views_per_s']:9.1f}  ({r['step_ms_median']:.1f} ms, {memory})")
            else:
                lines.append(f"  {key:22s} {r.get('skipped') or r.get('error')}")
    wait = data.get("data_wait", {})
    if wait:
        lines.append(f"data wait (batch {wait.get('batch')}, {wait.get('amp')}): share of step time")
        for key, r in wait.get("runs", {}).items():
            if "wait_share" in r:
                lines.append(f"  {key:22s} {r['wait_share']:9.1%}  ({r['views_per_s']:.1f} views/s)")
            else:
                lines.append(f"  {key:22s} {r.get('skipped') or r.get('error')}")
    seg = data.get("segment", {})
    if seg:
        if "median_s" in seg:
            lines.append(f"segment {seg['model']}, {seg['volume']}, {seg['windows']} windows: median s (x MONAI b4)")
            for name, t in seg["median_s"].items():
                ratio = seg["speed_vs_monai_batch_4"].get(name)
                lines.append(f"  {name:28s} {t:8.3f}" + (f"  ({ratio:.2f}x)" if ratio else ""))
        else:
            lines.append(f"segment: {seg.get('skipped') or seg.get('error')}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None):
    import torch

    def ints(text: str) -> list[int]:
        return [int(v) for v in text.replace("x", ",").split(",") if v.strip()]

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true",
                        help="every branch at small sizes (CPU: well under a minute): synthetic data, patch 16x32x32, "
                             "batches 2 and 4, workers 0 and 1, a 32x64x64 segmentation volume, compile with the "
                             "'eager' backend")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON file (default: benchmarks/results/gpu_check.json on CUDA, gpu_check_cpu.json else)")
    parser.add_argument("--budget-s", type=float, default=240.0, help="time for all measurements")
    parser.add_argument("--model", default="pgl-ct")
    parser.add_argument("--patch-size", type=ints, default=None, help="z,y,x (default: the card's)")
    parser.add_argument("--batch-sizes", type=ints, default=[4, 16])
    parser.add_argument("--workers", type=ints, default=[0, 4, 8, 16])
    parser.add_argument("--segment-model", default="pgl-lungs-ct")
    parser.add_argument("--segment-shape", type=ints, default=[128, 128, 128],
                        help="z,y,x of the synthetic volume when lung_006 or SimpleITK is absent")
    parser.add_argument("--max-steps", type=int, default=30, help="timed steps per configuration, at most")
    parser.add_argument("--chunk", type=int, default=5, help="steps between host syncs")
    parser.add_argument("--step-seconds", type=float, default=8.0, help="cap of each views/s measurement")
    parser.add_argument("--wait-seconds", type=float, default=10.0, help="cap of each data-wait measurement")
    parser.add_argument("--segment-seconds", type=float, default=30.0,
                        help="time the segmentation check needs; skipped when less is left")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each segmentation variant")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--compile-estimate-s", type=float, default=75.0,
                        help="time a compiled configuration needs (compiling included); skipped when less is left")
    parser.add_argument("--no-simpleitk", action="store_true",
                        help="run as on a machine without SimpleITK (synthetic data), as the GPU machine is")
    args = parser.parse_args(argv)
    if args.quick:
        quick = {"patch_size": [16, 32, 32], "batch_sizes": [2, 4], "workers": [0, 1], "segment_shape": [32, 64, 64],
                 "max_steps": 2, "chunk": 1, "step_seconds": 5.0, "wait_seconds": 3.0, "segment_seconds": 10.0,
                 "repeats": 1, "compile_backend": "eager", "compile_estimate_s": 5.0}
        given = {a.lstrip("-").split("=")[0].replace("-", "_") for a in (argv if argv is not None else sys.argv[1:])}
        for name, value in quick.items():
            if name not in given:
                setattr(args, name, value)
    if args.out is None:
        args.out = RESULTS / ("gpu_check.json" if args.device.startswith("cuda") else "gpu_check_cpu.json")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    budget = Budget(args.budget_s)
    simpleitk = ensure_simpleitk_importable(force_missing=args.no_simpleitk)
    import torch

    device = torch.device(args.device)
    results = Results(args.out, environment(args, simpleitk))
    results.save()
    print(json.dumps(results.data["meta"]), flush=True)

    if importlib.util.find_spec("dynamic_network_architectures") is None:
        reason = ("dynamic-network-architectures is not installed (gpu_check.sh installs its wheel from .whl/ when "
                  "carried); every measurement needs its networks")
        for key in ("pretrain", "data_wait", "segment"):
            results.data[key] = {"skipped": reason}
    else:
        from pretrain_step import load_volumes

        from pgl_zoo.registry import get_card

        with tempfile.TemporaryDirectory() as tmp:
            volumes, source = load_volumes(get_card(args.model), Path(tmp) / "cache", real=not args.quick)
            results.data["meta"]["data"] = source
            bench = PretrainBench(args, budget, device, volumes, source)
            pretraining(args, results, bench, compiled=False)
            data_wait(args, results, bench)
            results.measure(results.data, "segment", lambda: segment(args, budget, device, simpleitk))
            pretraining(args, results, bench, compiled=True)  # last: compiling is the slowest part
    results.data["meta"]["status"] = "complete"
    results.save()
    print(table(results.data))
    print(f"written: {args.out}")
    return results.data


if __name__ == "__main__":
    main()
