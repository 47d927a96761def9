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


def _number(low: float | None = None, high: float | None = None, *, open_low: bool = False,
            open_high: bool = False, none: bool = False):
    """A checker of one JSON number in a range (bools are not numbers here)."""
    def check(value: Any) -> bool:
        if value is None:
            return none
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            return False
        if low is not None and (value <= low if open_low else value < low):
            return False
        return not (high is not None and (value >= high if open_high else value > high))
    return check


def _flag(value: Any) -> bool:
    return isinstance(value, bool)


_NORM_KWARGS = {"eps": _number(0, 1, open_low=True), "momentum": _number(0, 1, none=True), "affine": _flag,
                "track_running_stats": _flag}
_DROPOUT_KWARGS = {"p": _number(0, 1, open_high=True), "inplace": _flag}
# The only classes a card's arch may name: those of nnU-Net's ResEnc presets (Conv3d, InstanceNorm3d,
# LeakyReLU, no dropout) and the few its other plans use. Each maps to (the class's module under torch.nn,
# the keyword arguments it may take with a check of their JSON value). A card is data: nothing is ever
# imported by a name it holds; pgl_zoo.nets looks the class up in torch.nn by the name in this table.
# tests/test_nets.py checks every keyword against the installed torch's signatures.
ALLOWED_OPS: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
    "conv_op": {"Conv3d": ("conv", {})},
    "norm_op": {"InstanceNorm3d": ("instancenorm", _NORM_KWARGS), "BatchNorm3d": ("batchnorm", _NORM_KWARGS)},
    "dropout_op": {"Dropout3d": ("dropout", _DROPOUT_KWARGS), "Dropout": ("dropout", _DROPOUT_KWARGS)},
    "nonlin": {"LeakyReLU": ("activation", {"negative_slope": _number(0, 1), "inplace": _flag}),
               "ReLU": ("activation", {"inplace": _flag})},
}
_OP_KWARGS_KEY = {"conv_op": None, "norm_op": "norm_op_kwargs", "dropout_op": "dropout_op_kwargs",
                  "nonlin": "nonlin_kwargs"}
# Bounds that keep a hostile or mistyped card from allocating before anything else checks it. nnU-Net's
# largest ResEnc preset (L) has 6 stages of at most 320 channels, 1-6 blocks, 3x3x3 kernels, strides <= 2.
MAX_STAGES = 8
MAX_WIDTH = 1024
MAX_BLOCKS = 16
MAX_KERNEL = 7
MAX_STRIDE = 4
MAX_PARAMETERS = 400_000_000


def op_class(key: str, value: Any) -> str | None:
    """The torch.nn class name that ``arch_kwargs[key]`` names, checked against :data:`ALLOWED_OPS`.

    Both spellings nnU-Net plans use are accepted (``torch.nn.LeakyReLU`` and
    ``torch.nn.modules.activation.LeakyReLU``); anything else raises ValueError, before any import.
    """
    if value is None and key != "conv_op":
        return None
    for name, (module, _) in ALLOWED_OPS[key].items():
        if value in (f"torch.nn.{name}", f"torch.nn.modules.{module}.{name}"):
            return name
    allowed = sorted(f"torch.nn.{n}" for n in ALLOWED_OPS[key])
    raise ValueError(f"arch_kwargs.{key} must be one of {allowed}{'' if key == 'conv_op' else ' or null'}, "
                     f"got {value!r} (a card names classes from a fixed list; nothing else is imported)")


def _check_op_kwargs(key: str, name: str | None, kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """``arch_kwargs[<key>_kwargs]`` checked against the allowed keywords of the class it configures."""
    kw_key = _OP_KWARGS_KEY[key]
    if kw_key is None:
        return None
    value = kwargs.get(kw_key)
    if name is None:
        if value not in (None, {}):
            raise ValueError(f"arch_kwargs.{kw_key} must be null when {key} is null, got {value!r}")
        return value
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"arch_kwargs.{kw_key} must be an object, got {value!r}")
    allowed = ALLOWED_OPS[key][name][1]
    for arg, item in value.items():
        if arg not in allowed:
            raise ValueError(f"arch_kwargs.{kw_key}: {name} takes no argument {arg!r} here "
                             f"(allowed: {sorted(allowed)})")
        if not allowed[arg](item):
            raise ValueError(f"arch_kwargs.{kw_key}.{arg}: invalid value {item!r} for {name}")
    return dict(value)

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
    kwargs = _arch_kwargs(arch)
    n = kwargs["n_stages"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"arch_kwargs.n_stages must be an integer >= 2, got {n!r}")
    if n > MAX_STAGES:
        raise ValueError(f"arch_kwargs.n_stages {n} is above the bound {MAX_STAGES}")
    kwargs = dict(kwargs)
    imports = _check_ops(arch, kwargs)
    if "conv_bias" in kwargs and not isinstance(kwargs["conv_bias"], bool):
        raise ValueError(f"arch_kwargs.conv_bias must be true or false, got {kwargs['conv_bias']!r}")
    stem = kwargs.get("stem_channels")
    if stem is not None and (isinstance(stem, bool) or not isinstance(stem, int) or not 1 <= stem <= MAX_WIDTH):
        raise ValueError(f"arch_kwargs.stem_channels must be null or an integer in [1, {MAX_WIDTH}], got {stem!r}")
    _normalise_stage_sizes(kwargs, n)
    params = estimated_parameters(kwargs)
    if params > MAX_PARAMETERS:
        raise ValueError(f"arch describes about {params / 1e6:.0f} M parameters, above the bound "
                         f"{MAX_PARAMETERS / 1e6:.0f} M")
    return {"network_class_name": NETWORK_CLASS, "arch_kwargs": kwargs, "_kw_requires_import": list(imports)}


def _arch_kwargs(arch: Any) -> dict[str, Any]:
    """The ``arch_kwargs`` of an architecture block (as given, not copied), after checking the block's
    keys and network class, and that the kwargs have no unknown and all required keys and the default
    residual block."""
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
    return kwargs


def _check_ops(arch: dict[str, Any], kwargs: dict[str, Any]) -> list:
    """Check the operation classes (convolution, norm, dropout, nonlinearity) and their kwargs, writing the
    checked op kwargs into ``kwargs``; returns ``arch["_kw_requires_import"]`` once it lists every class used."""
    classes = {key: op_class(key, kwargs.get(key)) for key in REQUIRES_IMPORT}
    for key, name in classes.items():
        checked = _check_op_kwargs(key, name, kwargs)
        if _OP_KWARGS_KEY[key] in kwargs:
            kwargs[_OP_KWARGS_KEY[key]] = checked
    imports = arch.get("_kw_requires_import")
    needed = {key for key, name in classes.items() if name is not None}
    if not isinstance(imports, list) or not set(imports) <= set(REQUIRES_IMPORT) or not needed <= set(imports):
        raise ValueError(f"arch._kw_requires_import must list {sorted(needed)} (a subset of {REQUIRES_IMPORT}), "
                         f"got {imports!r}")
    return imports


def _normalise_stage_sizes(kwargs: dict[str, Any], n: int) -> None:
    """Replace the per-stage sizes in ``kwargs`` by checked lists of ints: widths, blocks per stage and
    decoder convolutions (one per stage, ``n - 1`` for the decoder), strides and odd kernel sizes as one
    (z, y, x) triple per stage; each within its bound."""
    kwargs["features_per_stage"] = _int_list("features_per_stage", kwargs["features_per_stage"], n)
    kwargs["n_blocks_per_stage"] = _int_list("n_blocks_per_stage", kwargs["n_blocks_per_stage"], n)
    kwargs["n_conv_per_stage_decoder"] = _int_list("n_conv_per_stage_decoder", kwargs["n_conv_per_stage_decoder"],
                                                   n - 1)
    kwargs["strides"] = _triples("strides", kwargs["strides"], n)
    kwargs["kernel_sizes"] = _triples("kernel_sizes", kwargs["kernel_sizes"], n)
    if any(k % 2 == 0 for ks in kwargs["kernel_sizes"] for k in ks):
        raise ValueError(f"arch_kwargs.kernel_sizes must be odd, got {kwargs['kernel_sizes']}")
    for name, bound in (("features_per_stage", MAX_WIDTH), ("n_blocks_per_stage", MAX_BLOCKS),
                        ("n_conv_per_stage_decoder", MAX_BLOCKS), ("kernel_sizes", MAX_KERNEL),
                        ("strides", MAX_STRIDE)):
        values = kwargs[name]
        flat = [v for item in values for v in item] if name in ("kernel_sizes", "strides") else values
        if max(flat) > bound:
            raise ValueError(f"arch_kwargs.{name} {values} exceeds the bound {bound}")


def estimated_parameters(arch_kwargs: dict[str, Any]) -> int:
    """About how many weights ``ResidualEncoderUNet`` with these (checked) kwargs has: convolution weights
    of the encoder's residual blocks and the decoder, one input channel; a bound, not an exact count."""
    widths, blocks = arch_kwargs["features_per_stage"], arch_kwargs["n_blocks_per_stage"]
    kernels, strides = arch_kwargs["kernel_sizes"], arch_kwargs["strides"]
    total, previous = 0, 1
    for i, width in enumerate(widths):
        k3 = kernels[i][0] * kernels[i][1] * kernels[i][2]
        total += k3 * previous * width + (2 * blocks[i] - 1) * k3 * width * width + previous * width
        previous = width
    for i, convs in enumerate(arch_kwargs["n_conv_per_stage_decoder"]):
        s3 = strides[i + 1][0] * strides[i + 1][1] * strides[i + 1][2]
        k3 = kernels[i][0] * kernels[i][1] * kernels[i][2]
        total += s3 * widths[i + 1] * widths[i] + k3 * 2 * widths[i] * widths[i] + (convs - 1) * k3 * widths[i] ** 2
    return total


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
