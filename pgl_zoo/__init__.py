"""pgl-zoo: PGL-pretrained 3D encoders for medical image segmentation.

Quick start::

    import pgl_zoo
    pgl_zoo.list_models()   # ['pgl-ct', 'pgl-ct-large', 'pgl-ct-tiny', 'pgl-hippocampus-mri', 'pgl-hn-oars-ct',
                            #  'pgl-lungs-ct']
    encoder = pgl_zoo.load_pgl_encoder("pgl-ct-tiny")       # verified weights, load report
    net = pgl_zoo.pgl_unet3d(num_classes=3, encoder="pgl-ct-tiny")

Importing this package does not import torch; the functions that need it import it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .cards import ModelCard, Preprocessing
from .errors import (
    ChecksumError,
    DataError,
    ImageReadError,
    LoadError,
    PglZooError,
    UnknownModelError,
    WeightsNotAvailableError,
)
from .registry import get_card, list_models

__version__ = "0.1.0"

# name -> module holding it; imported lazily (PEP 562) so that `import pgl_zoo` stays light.
_LAZY = {
    "load_pgl_encoder": "pgl_zoo.api",
    "pgl_unet3d": "pgl_zoo.api",
    "load_segmentation_model": "pgl_zoo.api",
    "save_pretrained": "pgl_zoo.publish",
    "resolve_weights": "pgl_zoo.weights",
    "push_to_hub": "pgl_zoo.publish",
    "LoadReport": "pgl_zoo.load_report",
    "ResidualEncoder3d": "pgl_zoo.nets",
    "UNet3d": "pgl_zoo.nets",
}

__all__ = [
    "ChecksumError",
    "DataError",
    "ImageReadError",
    "LoadError",
    "ModelCard",
    "PglZooError",
    "Preprocessing",
    "UnknownModelError",
    "WeightsNotAvailableError",
    "get_card",
    "list_models",
    *_LAZY,
]

if TYPE_CHECKING:  # pragma: no cover
    from .api import load_pgl_encoder, load_segmentation_model, pgl_unet3d  # noqa: F401
    from .load_report import LoadReport  # noqa: F401
    from .nets import ResidualEncoder3d, UNet3d  # noqa: F401
    from .publish import push_to_hub, save_pretrained  # noqa: F401
    from .weights import resolve_weights  # noqa: F401


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'pgl_zoo' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
