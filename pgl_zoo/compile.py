"""Compiling a network for prediction: ``torch.compile`` with static shapes and inductor's freezing.

:func:`compile_for_inference` wraps a network so that :func:`pgl_zoo.sliding_window.predict_label` (and
``pgl-zoo segment --compile``) runs it compiled, falling back to the eager network, with one warning,
where compilation fails.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .messages import caveat

__all__ = ["compile_for_inference"]


class _CompiledForInference(nn.Module):
    """A network under ``torch.compile`` whose compilations run with inductor's ``freezing`` on.

    (``torch.compile(..., options={"freezing": True})`` does not reach the stage that freezes, as
    measured with torch 2.14: no speed-up; so the config is patched around every call, which is
    when compilation happens.) If the first call fails to compile (no working C++ compiler, say),
    one warning names the reason and the eager network is used from then on.
    """

    pgl_fixed_batch = True  # predict_label feeds it one input shape only

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.compiled = torch.compile(network, dynamic=False)
        self.compile_error: str | None = None
        self._first = True

    def forward(self, x: Tensor) -> Tensor:
        from torch._inductor import config as inductor_config

        if self.compile_error is not None:
            return self.network(x)
        try:
            with inductor_config.patch(freezing=True):
                return self.compiled(x)
        except Exception as error:  # noqa: BLE001 - any compiler failure: fall back, say why once
            if not self._first:
                raise
            self.compile_error = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            caveat(f"torch.compile failed, running the network uncompiled: {self.compile_error}",
                   RuntimeWarning, stacklevel=2)
            return self.network(x)
        finally:
            self._first = False


def compile_for_inference(network: nn.Module) -> nn.Module:
    """``torch.compile`` for prediction: static shapes and inductor's freezing (weights folded in as
    constants, convolution weights prepacked for oneDNN, normalisation and activation fused).

    The first call compiles (about 25-60 s on a 2-core CPU; inductor caches the result on disk, so a
    later process compiles faster); later calls with the same input shape reuse it. Outputs match the
    eager network to float rounding (about 1e-5 on logits). Use it where many windows or many scans
    amortise the compilation: ``pgl-zoo segment --compile``. Call it under ``torch.inference_mode``
    or ``torch.no_grad`` (freezing is for inference only).

    The weights are frozen into the compiled code: build a new one after changing them. The result
    carries ``pgl_fixed_batch = True``, so :func:`predict_label` feeds it one input shape only.
    """
    return _CompiledForInference(network)
