"""Make ``pgl_zoo/bundled/NAME/`` from a trained model folder, with the registry's card.

    python scripts/bundle_model.py NAME SOURCE [--check-training KEY=VALUE ...]

SOURCE is a folder with ``model.safetensors`` and ``card.json`` (``pgl-zoo export`` of a pretraining
run, the ``model/`` folder of a fine-tuning run, or a study encoder). The weights are written with
``save_pretrained`` and the *registry* card (so the shipped ``card.json`` equals it,
tests/test_registry_cards.py); the architecture, contents, classes and preprocessing of SOURCE's card
must equal the registry card's. Prints the sha256 and size to pin in ``pgl_zoo/registry.py`` (new weights
give new ones; the test fails until they are pinned).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from safetensors.torch import load_file

from pgl_zoo.cards import ModelCard
from pgl_zoo.publish import save_pretrained
from pgl_zoo.registry import get_card
from pgl_zoo.sources import BUNDLED_DIR

MUST_AGREE = ("arch", "contents", "num_classes", "in_channels", "preprocessing")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("source", type=Path)
    args = parser.parse_args(argv)
    registered = get_card(args.name)
    source = ModelCard.from_json_file(args.source / "card.json")
    differ = [k for k in MUST_AGREE if getattr(source, k) != getattr(registered, k)]
    if differ:
        details = "; ".join(f"{k}: source {getattr(source, k)!r} vs registry {getattr(registered, k)!r}"
                            for k in differ)
        raise SystemExit(f"{args.source}: does not match the registry card of {args.name}: {details}")
    state = load_file(str(args.source / source.filename))
    out = save_pretrained(state, registered, BUNDLED_DIR / args.name)
    saved = ModelCard.from_json_file(out / "card.json")
    print(f"{out}: sha256={saved.sha256} size_bytes={saved.size_bytes}  (pin both in pgl_zoo/registry.py)")


if __name__ == "__main__":
    main()
