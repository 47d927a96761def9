"""Loading a state dict into a network, part by part, with a report of what was loaded."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import LoadError
from .messages import report as report_line
from .nets import PARTS, STEM_KEY, adapt_input_channels, part_of, unique_state_dict

__all__ = ["PARTS", "LoadReport", "load_parts", "part_of"]


@dataclass
class LoadReport:
    """What a weights file gave a network. Keys are the zoo's names (:mod:`pgl_zoo.nets.keys`).

    loaded: keys copied from the file. missing: keys of the requested parts that the file lacks.
    unexpected: file keys of the requested parts that the network lacks. mismatched: keys whose
    shapes differ ("key: file shape -> network shape"). adapted: keys changed to fit (the first
    convolution for another number of input channels). ignored: file keys of parts not requested
    (e.g. a decoder when only the encoder is built). not_from_weights: network keys of parts
    that were not requested, left freshly initialised (e.g. the decoder and head of a new task).
    encoder_fraction: loaded encoder parameter elements / all encoder parameter elements.
    """

    source: str = ""
    path: str = ""
    sha256: str = ""
    sha256_verified: bool = False
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    not_from_weights: list[str] = field(default_factory=list)
    encoder_fraction: float = 0.0

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        checked = "sha256 verified" if self.sha256_verified else "sha256 NOT verified (no recorded digest)"
        text = (
            f"loaded {len(self.loaded)} tensors from {self.path} ({self.source}, {checked}); "
            f"encoder parameters loaded: {100 * self.encoder_fraction:.1f} %"
        )
        for name in ("missing", "unexpected", "mismatched", "adapted"):
            values = getattr(self, name)
            if values:
                text += f"; {name}: {len(values)} ({', '.join(values[:3])}{', ...' if len(values) > 3 else ''})"
        if self.not_from_weights:
            text += f"; {len(self.not_from_weights)} tensors freshly initialised (not from the weights)"
        return text


def load_parts(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    parts: tuple[str, ...],
    *,
    key_prefix: str = "",
    strict: bool = True,
    report: LoadReport | None = None,
) -> LoadReport:
    """Copy the ``parts`` of ``state`` into ``model`` and report.

    ``key_prefix`` is prepended to the model's own keys to name them as in UNet3d ("encoder."
    for a standalone encoder). Each tensor is counted once, under its zoo name (aliases such as
    ``decoder.encoder.*`` and ``*.all_modules.*`` are the same tensors and load with them). With
    ``strict``, any missing, unexpected or mismatched key raises LoadError and the model is left
    untouched.
    """
    report = report or LoadReport()
    own = unique_state_dict(model, key_prefix)
    new_state: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if part_of(key) not in parts:
            report.ignored.append(key)
            continue
        if key not in own:
            report.unexpected.append(key)
            continue
        target = own[key]
        if tensor.shape != target.shape:
            is_stem = key == f"encoder.{STEM_KEY}"
            if is_stem and tensor.shape[0] == target.shape[0] and tensor.shape[2:] == target.shape[2:]:
                tensor = adapt_input_channels(tensor, target.shape[1])
                report.adapted.append(f"{key}: {tuple(state[key].shape)} -> {tuple(target.shape)}")
            else:
                report.mismatched.append(f"{key}: {tuple(tensor.shape)} -> {tuple(target.shape)}")
                continue
        new_state[key[len(key_prefix):]] = tensor.to(dtype=target.dtype)
        report.loaded.append(key)
    loaded = set(report.loaded)
    mismatched = {m.split(":")[0] for m in report.mismatched}
    report.missing = [k for k in own if part_of(k) in parts and k not in loaded and k not in mismatched]
    report.not_from_weights = [k for k in own if part_of(k) not in parts]
    encoder_sizes = {k: v.numel() for k, v in own.items() if part_of(k) == "encoder"}
    total = sum(encoder_sizes.values())
    report.encoder_fraction = (
        sum(n for k, n in encoder_sizes.items() if k in loaded) / total if total else 0.0
    )
    if strict and not report.complete:
        where = report.path or "weights"
        raise LoadError(f"{where}: weights do not fit the network; {report.summary()}")
    model.load_state_dict(new_state, strict=False)
    report_line(report.summary())
    return report
