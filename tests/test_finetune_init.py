"""``FinetuneConfig.init`` (``pgl-zoo finetune --init``): what a pretrained start takes from the file."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from pgl_zoo.errors import PglZooError
from pgl_zoo.finetune.config import FinetuneConfig
from pgl_zoo.finetune.trainer import _build_network
from pgl_zoo.nets.keys import part_of
from pgl_zoo.sources import BUNDLED_DIR


@pytest.mark.parametrize("init", ["encoder+decoder", "encoder"])
def test_init_takes_the_decoder_only_when_asked(init, tmp_path):
    stored = load_file(str(BUNDLED_DIR / "pgl-ct-tiny" / "model.safetensors"))
    config = FinetuneConfig(out=tmp_path / "run", num_classes=2, data=tmp_path, encoder="pgl-ct-tiny", init=init)
    torch.manual_seed(0)
    state = _build_network(config).state_dict()
    for key, value in stored.items():
        same = torch.equal(state[key], value)
        if part_of(key) == "encoder" or init == "encoder+decoder":
            assert same, key
    decoder = [k for k in stored if part_of(k) == "decoder" and stored[k].numel() > 1 and stored[k].dim() > 1]
    assert decoder
    differs = [k for k in decoder if not torch.equal(state[k], stored[k])]
    assert (len(differs) == 0) == (init == "encoder+decoder")


def test_unknown_init_is_refused(tmp_path):
    with pytest.raises(PglZooError, match="init must be one of"):
        FinetuneConfig(out=tmp_path, num_classes=2, data=tmp_path, init="decoder")
