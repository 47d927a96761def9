"""Side by side: pgl-zoo 0.1's hand-written U-Net against nnU-Net's ResidualEncoderUNet (0.2), same widths.

    python benchmarks/networks_v01_vs_nnunet.py [--batch 8] [--repeats 5]

The 0.1 networks are read from git history (commit 487915d, the last before the change) into a
temporary folder, so this needs a git checkout. Both networks have pgl-ct-tiny's widths
(16-32-64-128, one block per stage); input (batch, 1, 32, 64, 64). Prints the median wall time of a
forward + backward pass and of an inference forward pass, alternating the two networks in one
process, and the ratios new / old.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
OLD_COMMIT = "487915d"


def old_unet_class(folder: Path):
    package = folder / "oldnets"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("blocks", "encoder", "unet"):
        source = subprocess.run(["git", "-C", str(REPO), "show", f"{OLD_COMMIT}:pgl_zoo/nets/{name}.py"],
                                capture_output=True, text=True, check=True).stdout
        (package / f"{name}.py").write_text(source)
    sys.path.insert(0, str(folder))
    from oldnets.unet import UNet3d

    return UNet3d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import pgl_zoo
    from pgl_zoo.nets import build_unet

    with tempfile.TemporaryDirectory() as tmp:
        old_class = old_unet_class(Path(tmp))
        torch.manual_seed(0)
        old = old_class(2, 1, [16, 32, 64, 128], [1, 1, 1, 1], [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]])
    new = build_unet(pgl_zoo.get_card("pgl-ct-tiny").arch, 2)
    x = torch.randn(args.batch, 1, 32, 64, 64)

    def train(net) -> float:
        start = time.perf_counter()
        net(x).square().mean().backward()
        return time.perf_counter() - start

    def infer(net) -> float:
        with torch.inference_mode():
            start = time.perf_counter()
            net(x)
            return time.perf_counter() - start

    times: dict[str, list[float]] = {"old train": [], "new train": [], "old infer": [], "new infer": []}
    for net in (old, new):
        train(net), infer(net)  # warm-up
    for _ in range(args.repeats):
        for label, net in (("old", old), ("new", new)):
            times[f"{label} train"].append(train(net))
            times[f"{label} infer"].append(infer(net))
    median = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, 32x64x64")
    counts = [sum(p.numel() for p in net.parameters()) for net in (old, new)]
    print(f"parameters: 0.1 {counts[0]}, nnU-Net {counts[1]}")
    for key, value in median.items():
        print(f"{key}: {value:.3f} s (median of {args.repeats})")
    print(f"ratio nnU-Net / 0.1: train {median['new train'] / median['old train']:.2f}, "
          f"inference {median['new infer'] / median['old infer']:.2f}")


if __name__ == "__main__":
    main()
