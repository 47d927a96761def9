"""nnU-Net v2 interoperability: a checkpoint for ``-pretrained_weights`` and plans that match a zoo model.

Every pgl-zoo network is nnU-Net's ``ResidualEncoderUNet`` (dynamic-network-architectures) and a
card's ``arch`` is nnU-Net's architecture block, so nothing is translated:

* :func:`export_nnunet_checkpoint` writes ``{"network_weights": state_dict}``, the dict that
  ``nnunetv2.run.load_pretrained_weights`` reads, with every key of nnU-Net's own
  ``network.state_dict()`` (including the second names the library gives each tensor, such as
  ``decoder.encoder.*`` and ``*.all_modules.*``). nnU-Net skips ``.seg_layers.`` and needs every
  other key: parts the zoo file lacks (the decoder of an encoder-only model) are written with
  nnU-Net's own initialisation, and the function says so.
* :func:`write_nnunet_plans` copies an ``nnUNetPlans.json`` made by nnU-Net for the user's data
  set and writes it under a new plans identifier whose ``3d_fullres`` configuration has the
  model's architecture, spacing, patch size and (for CT) intensity window; everything else that
  nnU-Net derived from the data set is kept.

Neither function needs nnunetv2; :func:`check_with_nnunet` (optional extra ``pgl-zoo[nnunet]``)
builds the network with nnU-Net's own code and loads the checkpoint with its own loader.

Axis order: nnU-Net stores spacing, patch size, strides and kernel sizes in the order of its
transposed arrays (``transpose_forward`` applied to SimpleITK's (z, y, x) array axes); pgl-zoo
cards hold (z, y, x) for arrays and (x, y, z) for spacing. Conversions happen here only.
"""

from __future__ import annotations

import copy
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from .arch import cumulative_strides
from .atomic import atomic_write
from .cards import LINEAR_PROBE, ModelCard
from .errors import PglZooError
from .resolve import PRETRAIN_RUN, ModelRef, resolve_model

PathLike = str | os.PathLike
CONFIGURATION = "3d_fullres"
# A plans identifier becomes a file name in --out and folder names in nnU-Net's trees: no path, nothing hidden.
PLANS_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,199}")
NNUNET_MISSING = "nnunetv2 is not installed; install the extra: pip install \"pgl-zoo[nnunet]\""


def _zoo_state(ref: ModelRef, tmp: Path) -> tuple[ModelCard, dict, str]:
    """Card, zoo state dict and source description of a zoo name, folder or pretraining run."""
    from .weights import read_state_dict, resolve_weights

    if ref.kind == PRETRAIN_RUN:
        from .pretrain.export import export_run
        from .runs import read_json

        # config.json, not the checkpoint: export_run reads the checkpoint once (local_weight cannot change on resume)
        trained_decoder = bool(read_json(ref.path / "config.json")["local_weight"])
        ref = resolve_model(export_run(ref.path, ref.path.name, tmp / "export", include_decoder=trained_decoder))
    resolved = resolve_weights(ref)
    state, digest = read_state_dict(resolved.path, resolved.card, verified_sha256=resolved.verified_sha256)
    return resolved.card, state, f"{resolved.path} (sha256 {digest})"


def _zoo_card(model: PathLike, tmp: Path) -> ModelCard:
    """The card of a zoo name, folder or pretraining run (no weights are read for a name or folder)."""
    from .weights import resolve_weights

    ref = resolve_model(model)
    if ref.kind == PRETRAIN_RUN:
        return _zoo_state(ref, tmp)[0]
    return ref.card if ref.registered else resolve_weights(ref).card


def export_nnunet_checkpoint(model: PathLike, out: PathLike, *, overwrite: bool = False) -> dict[str, Any]:
    """Write the checkpoint nnU-Net's ``-pretrained_weights`` reads; returns a summary dict.

    ``model``: a registered name, a zoo folder, a fine-tuned model folder or a pretraining run
    folder (its encoder, and its decoder when the local loss trained it). The summary lists the
    parts taken from the weights and the keys left at nnU-Net's initialisation.
    """
    from .load_report import load_parts
    from .nets import build_unet
    from .runs import save_checkpoint

    out = Path(out)
    if out.exists() and not overwrite:
        raise PglZooError(f"{out}: exists; pass --overwrite to replace it")
    with tempfile.TemporaryDirectory() as tmp:
        card, state, source = _zoo_state(resolve_model(model), Path(tmp))
    if card.architecture == LINEAR_PROBE:
        raise PglZooError(f"{model}: a linear-probe model (finetune --freeze-encoder) has no U-Net decoder for "
                          "nnU-Net; export its encoder's source model instead")
    net = build_unet(card.arch, card.num_classes or 2, card.in_channels)
    parts = tuple(p for p in ("encoder", "decoder", "head") if p in card.contents)
    report = load_parts(net, state, parts, strict=True)
    initialised = [k for k in report.not_from_weights if ".seg_layers." not in k]
    payload = {
        "network_weights": {k: v.detach().clone() for k, v in net.state_dict().items()},
        "pgl_zoo": {"model": card.name, "source": source, "parts": list(parts), "arch": json.dumps(card.arch),
                    "initialised_by_nnunet": initialised},
    }
    save_checkpoint(payload, out)  # atomic; a full disk is one line naming the file
    return {"path": str(out), "model": card.name, "parts": list(parts), "keys": len(payload["network_weights"]),
            "initialised_by_nnunet": initialised}


def _permute(values_zyx: list, transpose_forward: list[int]) -> list:
    """(z, y, x)-ordered values in nnU-Net's transposed axis order."""
    return [values_zyx[i] for i in transpose_forward]


def plans_configuration(card: ModelCard, plans: dict[str, Any]) -> dict[str, Any]:
    """The ``3d_fullres`` configuration of ``plans`` changed to ``card``'s network and preprocessing."""
    if CONFIGURATION not in plans.get("configurations", {}):
        raise PglZooError(f"plans {plans.get('plans_name')!r} have no {CONFIGURATION} configuration")
    transpose = [int(i) for i in plans.get("transpose_forward", [0, 1, 2])]
    config = copy.deepcopy(plans["configurations"][CONFIGURATION])
    arch = copy.deepcopy(card.arch)
    kwargs = arch["arch_kwargs"]
    kwargs["strides"] = [_permute(s, transpose) for s in kwargs["strides"]]
    kwargs["kernel_sizes"] = [_permute(k, transpose) for k in kwargs["kernel_sizes"]]
    config["architecture"] = arch
    config["patch_size"] = _permute(list(card.patch_size_zyx), transpose)
    spacing_xyz = card.preprocessing.spacing_xyz_mm
    if spacing_xyz is not None:
        config["spacing"] = _permute(list(spacing_xyz[::-1]), transpose)
        old_shape = plans.get("original_median_shape_after_transp")
        old_spacing = plans.get("original_median_spacing_after_transp")
        if old_shape and old_spacing:
            config["median_image_size_in_voxels"] = [
                max(1, round(n * s / t)) for n, s, t in zip(old_shape, old_spacing, config["spacing"], strict=True)]
    total = cumulative_strides(kwargs["strides"])[-1]
    if any(p % t for p, t in zip(config["patch_size"], total, strict=True)):
        raise PglZooError(f"{card.name}: patch {config['patch_size']} is not a multiple of the stride {total}")
    n_channels = len(config.get("normalization_schemes", [])) or 1
    scheme = "CTNormalization" if card.modality.upper() == "CT" else "ZScoreNormalization"
    config["normalization_schemes"] = [scheme] * n_channels
    config["use_mask_for_norm"] = [False] * n_channels
    return config


def write_nnunet_plans(model: PathLike, plans_path: PathLike, out_dir: PathLike, *, plans_name: str | None = None,
                       overwrite: bool = False) -> Path:
    """Write ``out_dir/<plans_name>.json``: the user's nnU-Net plans with ``model``'s 3d_fullres network.

    The new plans identifier (default ``<old plans name>_<model name>``) gives preprocessed data
    and results their own folders (``data_identifier`` changes too). For a CT model the clip
    range of nnU-Net's ``CTNormalization`` (``percentile_00_5`` / ``percentile_99_5`` of each
    channel's foreground intensity properties) becomes the card's window; the mean and standard
    deviation stay nnU-Net's data-set-wide foreground statistics (pgl-zoo itself z-scores each
    volume: a small, documented difference). Returns the written file.
    """
    plans_path = Path(plans_path)
    try:
        plans = json.loads(plans_path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise PglZooError(f"{plans_path}: not a readable nnU-Net plans file ({exc})") from None
    if not isinstance(plans, dict) or "configurations" not in plans or "plans_name" not in plans:
        raise PglZooError(f"{plans_path}: not an nnU-Net plans file (no plans_name / configurations)")
    with tempfile.TemporaryDirectory() as tmp:
        card = _zoo_card(model, Path(tmp))
    new = copy.deepcopy(plans)
    new["plans_name"] = plans_name or f"{plans['plans_name']}_{card.name}"
    if not isinstance(new["plans_name"], str) or not PLANS_NAME.fullmatch(new["plans_name"]):
        source = "--plans-name" if plans_name else f"{plans_path}: plans_name"
        raise PglZooError(f"{source}: {new['plans_name']!r} is not a plain plans identifier (letters, digits, "
                          "'_', '-', '.', '+'; it names a file and folders inside --out)")
    config = plans_configuration(card, plans)
    config["data_identifier"] = f"{new['plans_name']}_{CONFIGURATION}"
    new["configurations"][CONFIGURATION] = config
    window = card.preprocessing.window
    if card.modality.upper() == "CT" and window is not None:
        for props in new.get("foreground_intensity_properties_per_channel", {}).values():
            props["percentile_00_5"], props["percentile_99_5"] = float(window[0]), float(window[1])
    out = Path(out_dir) / f"{new['plans_name']}.json"
    if out.exists() and not overwrite:
        raise PglZooError(f"{out}: exists; pass --overwrite to replace it")
    atomic_write(out, lambda tmp: Path(tmp).write_text(json.dumps(new, indent=4) + "\n"))
    return out


def require_nnunet() -> None:
    """PglZooError with the install line when the optional extra nnunetv2 is missing."""
    import importlib.util

    try:
        found = importlib.util.find_spec("nnunetv2") is not None
    except ValueError:  # a module set to None in sys.modules (as the tests do) counts as missing
        found = False
    if not found:
        raise PglZooError(NNUNET_MISSING)


def check_with_nnunet(plans_file: PathLike, dataset_json: PathLike, checkpoint: PathLike) -> int:
    """Build the 3d_fullres network with nnU-Net's own code and load ``checkpoint`` with its own loader.

    Returns the number of parameters nnU-Net loaded. Raises PglZooError (one line) when nnunetv2
    is missing or the weights do not fit.
    """
    try:
        from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
        from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    except ImportError:
        raise PglZooError(NNUNET_MISSING) from None
    plans = PlansManager(json.loads(Path(plans_file).read_text()))
    config = plans.get_configuration(CONFIGURATION)
    dataset = json.loads(Path(dataset_json).read_text())
    net = get_network_from_plans(
        config.network_arch_class_name, config.network_arch_init_kwargs, config.network_arch_init_kwargs_req_import,
        determine_num_input_channels(plans, config, dataset), plans.get_label_manager(dataset).num_segmentation_heads,
        deep_supervision=True)
    with tempfile.TemporaryDirectory() as tmp:
        # nnU-Net's loader unpickles with weights_only=False: it only ever sees a copy made here from tensors.
        checked = read_nnunet_checkpoint(checkpoint, Path(tmp) / "checked.pth")
        try:
            load_pretrained_weights(net, str(checked))
        except (AssertionError, KeyError, RuntimeError) as exc:
            raise PglZooError(f"{checkpoint}: nnU-Net could not load it into the plans' network ({exc})") from None
    return sum(p.numel() for n, p in net.named_parameters() if ".seg_layers." not in n)


def read_nnunet_checkpoint(checkpoint: PathLike, copy_to: PathLike) -> Path:
    """Read ``checkpoint`` with ``torch.load(weights_only=True)`` (no code runs), check it is the dict
    ``export_nnunet_checkpoint`` writes (``network_weights``: name -> tensor) and save those tensors alone to
    ``copy_to``, the file to hand to nnU-Net's own (pickle-trusting) loader. PglZooError names the file."""
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # torch's note on a pickle protocol it may not support: the refusal says more
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PglZooError(f"{checkpoint}: refused: not a plain tensor checkpoint (torch.load with weights_only=True: "
                          f"{reason})") from None
    weights = payload.get("network_weights") if isinstance(payload, dict) else None
    if not isinstance(weights, dict) or not weights or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
        raise PglZooError(f"{checkpoint}: not a checkpoint of `pgl-zoo export --format nnunet` (no network_weights "
                          "dict of tensors)")
    torch.save({"network_weights": weights}, copy_to)
    return Path(copy_to)
