"""Every command-line default of `pretrain` and `finetune` is the Python API's (the config dataclasses):
one home for each default, so the two can never drift apart (issue 22)."""

from __future__ import annotations

from dataclasses import MISSING, fields

import click
import pytest

from pgl_zoo.finetune.cli import finetune_cmd
from pgl_zoo.finetune.config import FinetuneConfig
from pgl_zoo.pretrain.cli import _PARAM_TO_FIELD, pretrain_cmd
from pgl_zoo.pretrain.config import PretrainConfig


def _defaults(config_class) -> dict:
    return {f.name: (f.default if f.default is not MISSING else f.default_factory())
            for f in fields(config_class) if f.default is not MISSING or f.default_factory is not MISSING}


@pytest.mark.parametrize(("command", "config_class", "renamed"), [
    (pretrain_cmd, PretrainConfig, _PARAM_TO_FIELD), (finetune_cmd, FinetuneConfig, {})])
def test_command_defaults_are_the_config_defaults(command: click.Command, config_class, renamed):
    api = _defaults(config_class)
    compared = 0
    for param in command.params:
        field = renamed.get(param.name, param.name)
        if field not in api or not isinstance(param.default, (str, int, float)) or isinstance(param, click.Argument):
            continue  # options without a default of their own (unset, or None: "the card's", "auto")
        default = param.default
        if isinstance(api[field], tuple):  # ranges are written "lo,hi" on the command line
            default = tuple(float(v) for v in str(default).split(","))
        assert default == api[field], f"{command.name} --{param.name.replace('_', '-')}: {default!r} vs {api[field]!r}"
        compared += 1
    assert compared >= 12  # the numbers and choices of each command, not an empty loop
