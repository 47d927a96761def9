"""A card's ``arch``: nnU-Net's architecture block for ``ResidualEncoderUNet``, as plain data.

The value is exactly what nnU-Net v2 stores under ``plans["configurations"][C]["architecture"]``::

    {"network_class_name": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
     "arch_kwargs": {"n_stages": 4, "features_per_stage": [16, 32, 64, 128], ...},
     "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}

so a card turns into an nnU-Net plan and back without translation (``pgl_zoo.nnunet``). The number
of input channels and classes are not part of it (nnU-Net takes them from the data set; a card
keeps ``in_channels`` and ``num_classes`` beside ``arch``).

Axis order: ``strides`` and ``kernel_sizes`` hold one (z, y, x) triple per stage, in the order of
the array axes of a volume read with SimpleITK (``GetArrayFromImage``), which is also nnU-Net's
order when its ``transpose_forward`` is (0, 1, 2).

This module imports no torch (cards are validated by ``pgl-zoo list``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

NETWORK_CLASS = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
REQUIRES_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]
CONV3D = "torch.nn.modules.conv.Conv3d"
INSTANCE_NORM3D = "torch.nn.modules.instancenorm.InstanceNorm3d"
LEAKY_RELU = "torch.nn.LeakyReLU"

# The keyword arguments of ResidualEncoderUNet that a plan may set (input_channels, num_classes and
# deep_supervision are given when the network is built). tests/test_nets.py checks this list
# against the installed library's signature.
ARCH_KWARGS = (
    "n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides", "n_blocks_per_stage",
    "n_conv_per_stage_decoder", "conv_bias", "norm_op", "norm_op_kwargs", "dropout_op", "dropout_op_kwargs",
    "nonlin", "nonlin_kwargs", "block", "bottleneck_channels", "stem_channels",
)
REQUIRED_KWARGS = (
    "n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides", "n_blocks_per_stage",
    "n_conv_per_stage_decoder",
)
# Arguments that belong to the decoder only: a standalone encoder is built without them.
DECODER_ONLY_KWARGS = ("n_conv_per_stage_decoder",)


def zyx_triple(value: int | Sequence[int]) -> tuple[int, int, int]:
    """A per-axis (z, y, x) triple from one int or three values (strides, sizes)."""
    if isinstance(value, int):
        return (value, value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 3:
        raise ValueError(f"expected 3 values (z, y, x), got {value}")
    return value  # type: ignore[return-value]


def resenc_arch(
    features_per_stage: Sequence[int],
    n_blocks_per_stage: Sequence[int],
    strides: Sequence[Sequence[int] | int],
    *,
    n_conv_per_stage_decoder: int | Sequence[int] = 1,
    kernel_sizes: Sequence[Sequence[int] | int] | int = 3,
    conv_bias: bool = True,
) -> dict[str, Any]:
    """An nnU-Net ``ResidualEncoderUNet`` architecture block (InstanceNorm, LeakyReLU, no dropout).

    The defaults are those of nnU-Net's residual-encoder presets (``nnUNetPlannerResEnc*``): 3x3x3
    kernels, conv bias, InstanceNorm (eps 1e-5, affine), LeakyReLU (slope 0.01), one convolution per
    decoder stage. ``strides`` are per stage (z, y, x); the first is usually (1, 1, 1).

    Example:
        >>> resenc_arch([8, 16], [1, 1], [1, 2])["arch_kwargs"]["strides"]
        [[1, 1, 1], [2, 2, 2]]
    """
    n = len(features_per_stage)
    if isinstance(kernel_sizes, int):
        kernel_sizes = [kernel_sizes] * n
    if isinstance(n_conv_per_stage_decoder, int):
        n_conv_per_stage_decoder = [n_conv_per_stage_decoder] * (n - 1)
    return validate_arch({
        "network_class_name": NETWORK_CLASS,
        "arch_kwargs": {
            "n_stages": n,
            "features_per_stage": list(features_per_stage),
            "conv_op": CONV3D,
            "kernel_sizes": [list(zyx_triple(k)) for k in kernel_sizes],
            "strides": [list(zyx_triple(s)) for s in strides],
            "n_blocks_per_stage": list(n_blocks_per_stage),
            "n_conv_per_stage_decoder": list(n_conv_per_stage_decoder),
            "conv_bias": bool(conv_bias),
            "norm_op": INSTANCE_NORM3D,
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": LEAKY_RELU,
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": list(REQUIRES_IMPORT),
    })


def _int_list(name: str, value: Any, n: int) -> list[int]:
    if isinstance(value, bool) or not isinstance(value, list | tuple) or len(value) != n:
        raise ValueError(f"arch_kwargs.{name} must be a list of {n} integers, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"arch_kwargs.{name} must hold positive integers, got {value!r}")
        out.append(int(v))
    return out


def _triples(name: str, value: Any, n: int) -> list[list[int]]:
    if not isinstance(value, list | tuple) or len(value) != n:
        raise ValueError(f"arch_kwargs.{name} must hold one (z, y, x) triple per stage ({n}), got {value!r}")
    return [_int_list(f"{name}[{i}]", v, 3) for i, v in enumerate(value)]


def validate_arch(arch: Any) -> dict[str, Any]:
    """Check an architecture block and return it normalised (lists of ints); ValueError names the fault.

    Only ``ResidualEncoderUNet`` on 3D convolutions is supported: every pgl-zoo network is one.
    """
    if not isinstance(arch, dict):
        raise ValueError(f"arch must be an object, got {type(arch).__name__}")
    unknown = set(arch) - {"network_class_name", "arch_kwargs", "_kw_requires_import"}
    if unknown:
        raise ValueError(f"arch has unknown keys {sorted(unknown)} (expected nnU-Net's architecture block: "
                         "network_class_name, arch_kwargs, _kw_requires_import)")
    if arch.get("network_class_name") != NETWORK_CLASS:
        raise ValueError(f"arch.network_class_name must be {NETWORK_CLASS!r}, got {arch.get('network_class_name')!r}")
    kwargs = arch.get("arch_kwargs")
    if not isinstance(kwargs, dict):
        raise ValueError("arch.arch_kwargs must be an object")
    unknown = set(kwargs) - set(ARCH_KWARGS)
    if unknown:
        raise ValueError(f"arch_kwargs has unknown keys {sorted(unknown)}")
    missing = [k for k in REQUIRED_KWARGS if k not in kwargs]
    if missing:
        raise ValueError(f"arch_kwargs lacks {missing}")
    if kwargs.get("block") is not None or kwargs.get("bottleneck_channels") is not None:
        raise ValueError("arch_kwargs: only the default BasicBlockD residual block is supported")
    n = kwargs["n_stages"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"arch_kwargs.n_stages must be an integer >= 2, got {n!r}")
    if kwargs["conv_op"] != CONV3D:
        raise ValueError(f"arch_kwargs.conv_op must be {CONV3D!r} (3D networks), got {kwargs['conv_op']!r}")
    imports = arch.get("_kw_requires_import")
    if not isinstance(imports, list) or not set(imports) <= set(REQUIRES_IMPORT) or "conv_op" not in imports:
        raise ValueError(f"arch._kw_requires_import must be a subset of {REQUIRES_IMPORT} with conv_op, "
                         f"got {imports!r}")
    kwargs = dict(kwargs)
    kwargs["features_per_stage"] = _int_list("features_per_stage", kwargs["features_per_stage"], n)
    kwargs["n_blocks_per_stage"] = _int_list("n_blocks_per_stage", kwargs["n_blocks_per_stage"], n)
    kwargs["n_conv_per_stage_decoder"] = _int_list("n_conv_per_stage_decoder", kwargs["n_conv_per_stage_decoder"],
                                                   n - 1)
    kwargs["strides"] = _triples("strides", kwargs["strides"], n)
    kwargs["kernel_sizes"] = _triples("kernel_sizes", kwargs["kernel_sizes"], n)
    if any(k % 2 == 0 for ks in kwargs["kernel_sizes"] for k in ks):
        raise ValueError(f"arch_kwargs.kernel_sizes must be odd, got {kwargs['kernel_sizes']}")
    return {"network_class_name": NETWORK_CLASS, "arch_kwargs": kwargs, "_kw_requires_import": list(imports)}


def stage_widths(arch: dict[str, Any]) -> list[int]:
    """Channels of each encoder stage's output (= decoder level i's channels), finest first."""
    return list(arch["arch_kwargs"]["features_per_stage"])


def stage_strides(arch: dict[str, Any]) -> list[tuple[int, int, int]]:
    """The (z, y, x) downsampling of each encoder stage relative to the one before it."""
    return [zyx_triple(s) for s in arch["arch_kwargs"]["strides"]]


def cumulative_strides(strides: Sequence[Sequence[int] | int]) -> list[tuple[int, int, int]]:
    """Downsampling (z, y, x) of each stage's output relative to the input, from per-stage strides."""
    out, total = [], (1, 1, 1)
    for stride in strides:
        total = tuple(t * s for t, s in zip(total, zyx_triple(stride), strict=True))
        out.append(total)
    return out
