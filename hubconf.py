"""torch.hub entry points: ``torch.hub.load("org/pgl", "pgl_unet3d", num_classes=3)``."""

dependencies = ["torch", "safetensors", "huggingface_hub", "numpy", "SimpleITK", "dynamic_network_architectures"]

from pgl_zoo.api import load_pgl_encoder as pgl_encoder  # noqa: E402,F401
from pgl_zoo.api import pgl_unet3d  # noqa: E402,F401
