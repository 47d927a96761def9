"""torch.hub entry points, e.g. in a clone's root: ``torch.hub.load(".", "pgl_unet3d", source="local", num_classes=3)``.

``pgl_encoder(name)`` is :func:`pgl_zoo.load_pgl_encoder` and ``pgl_unet3d(num_classes, encoder=...)`` is
:func:`pgl_zoo.pgl_unet3d`; without a name both use the zoo's default encoder (bundled: no download).
"""

dependencies = ["torch", "safetensors", "huggingface_hub", "numpy", "SimpleITK", "dynamic_network_architectures"]

from pgl_zoo.api import load_pgl_encoder as pgl_encoder  # noqa: E402,F401
from pgl_zoo.api import pgl_unet3d  # noqa: E402,F401
