"""The main job from Python: what ``pgl-zoo demo --out quickstart/`` does, through the package's API.

    python examples/quickstart.py --out quickstart/ [--fast] [--model NAME|PATH] [--encoder NAME|PATH|none]

On the chest CTs shipped with pgl-zoo (six LCTSC cases with expert lung labels, no network):
(a) segments the held-out case lung_005 with the zoo's fine-tuned lung model; (b) fine-tunes a new
network from the zoo's PGL encoder on lung_000..lung_004 and segments lung_005 with it. Both Dice
scores against the expert label are printed and stored in ``quickstart/summary.json`` beside the
label maps and ``preview.png``. See ``pgl_zoo/demo.py`` for each step.
"""

from __future__ import annotations

import argparse

from pgl_zoo import PglZooError
from pgl_zoo.demo import DEFAULT_MODEL, DemoConfig, run_demo
from pgl_zoo.registry import default_encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="quickstart", help="output folder (absent or empty)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="part (a): a fine-tuned lung model")
    parser.add_argument("--encoder", default=default_encoder(), help="part (b): the encoder to fine-tune from")
    parser.add_argument("--fast", action="store_true", help="part (a) only")
    parser.add_argument("--steps", type=int, help="part (b): fine-tuning steps (default: the demo's recipe)")
    args = parser.parse_args()
    try:
        summary = run_demo(DemoConfig(out=args.out, model=args.model, encoder=args.encoder, fast=args.fast,
                                      steps=args.steps))
    except PglZooError as exc:  # one line, as the CLI does
        raise SystemExit(f"error: {exc}") from None
    print(f"Dice against the expert label: (a) {summary['zoo_model']['dice']:.3f}"
          + (f", (b) {summary['finetuned']['dice']:.3f}" if "finetuned" in summary else ""))


if __name__ == "__main__":
    main()
