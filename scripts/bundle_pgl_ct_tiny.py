"""Make pgl_zoo/bundled/pgl-ct-tiny/ from a finished pretraining run (the recipe in the registry card).

    python scripts/bundle_pgl_ct_tiny.py runs/pgl-ct-tiny

Exports the run (encoder and the decoder levels the local loss trained), checks that the run was
trained as the registry card records (steps, batch size, hyperparameters), and writes the bundled
folder with save_pretrained and the registry card, so that the shipped card.json equals the
registry card (tests/test_registry_cards.py). Prints the sha256 and size to pin in
pgl_zoo/registry.py (a new run gives new ones).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from safetensors.torch import load_file

from pgl_zoo.cards import ModelCard
from pgl_zoo.pretrain.export import export_run
from pgl_zoo.registry import get_card
from pgl_zoo.weights import BUNDLED_DIR, save_pretrained


def main(run: str) -> None:
    registered = get_card("pgl-ct-tiny")
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_run(run, "pgl-ct-tiny", Path(tmp) / "export", include_decoder=True)
        exported = ModelCard.from_json_file(folder / "card.json")
        state = load_file(str(folder / "model.safetensors"))
    record, config = registered.training, dict(exported.training["config"], local_levels=exported.training[
        "local_levels"])
    differ = {k: (config.get(k), v) for k, v in record["hyperparameters"].items() if config.get(k) != v}
    for key in ("steps", "batch_size"):
        if config.get(key) != record[key]:
            differ[key] = (config.get(key), record[key])
    if differ:
        raise SystemExit(f"{run}: trained otherwise than the registry card records (run, card): {differ}")
    out = save_pretrained(state, registered, BUNDLED_DIR / "pgl-ct-tiny")
    saved = ModelCard.from_json_file(out / "card.json")
    print(f"sha256={saved.sha256} size_bytes={saved.size_bytes}  (pin both in pgl_zoo/registry.py)")


if __name__ == "__main__":
    main(sys.argv[1])
