"""`pgl-zoo export` (a run as a zoo folder, or any model as an nnU-Net checkpoint) and `pgl-zoo nnunet-plans`."""

from __future__ import annotations

from pathlib import Path

import click

from .errors import PglZooError
from .messages import say


@click.command("export", context_settings={"max_content_width": 110})
@click.argument("source", metavar="RUN|MODEL")
@click.option("--out", required=True, type=click.Path(path_type=str),
              help="zoo: output folder (model.safetensors, card.json, README.md). nnunet: the checkpoint file.")
@click.option("--format", "format_", type=click.Choice(["zoo", "nnunet"]), default="zoo", show_default=True,
              help="zoo: a pretraining run as a zoo folder. nnunet: a run, zoo name or zoo folder as the "
                   "checkpoint nnUNetv2_train -pretrained_weights reads.")
@click.option("--name", help="zoo format: name of the exported model (recorded in card.json); required.")
@click.option("--decoder/--no-decoder", default=False, show_default=True,
              help="zoo format: also export the decoder trained by the local loss (nnunet format: always "
                   "exported when the run trained it).")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing output (refused otherwise; an earlier export of the same run is refreshed).")
def export_cmd(source: str, out: str, format_: str, name: str | None, decoder: bool, overwrite: bool) -> None:
    """Export a pretraining run as a zoo folder, or a run or zoo model for nnU-Net.

    \b
    Zoo folder:  pgl-zoo export runs/tiny --name my-pgl-ct --out my-pgl-ct/
                 then pgl_zoo.load_pgl_encoder("my-pgl-ct/")
    nnU-Net:     pgl-zoo export pgl-ct-tiny --format nnunet --out pgl-ct-tiny_nnunet.pth
                 then nnUNetv2_train DATASET 3d_fullres all -p PLANS -pretrained_weights pgl-ct-tiny_nnunet.pth
                 (PLANS from `pgl-zoo nnunet-plans`; keys: see the README's nnU-Net section)
    """
    if format_ == "nnunet":
        from .nnunet import export_nnunet_checkpoint

        summary = export_nnunet_checkpoint(source, out, overwrite=overwrite)
        say(f"wrote {summary['path']}: {summary['model']} ({', '.join(summary['parts'])}), "
                   f"{summary['keys']} nnU-Net state-dict keys")
        if summary["initialised_by_nnunet"]:
            say(f"note: {len(summary['initialised_by_nnunet'])} tensors (the parts the model lacks) have "
                       "nnU-Net's own initialisation", err=True)
        return
    if not name:
        raise PglZooError("--name is required with --format zoo")
    from .resolve import PRETRAIN_RUN, resolve_model

    ref = resolve_model(source) if Path(source).expanduser().exists() else None
    if ref is None or ref.kind != PRETRAIN_RUN:
        raise PglZooError(f"{source}: not a pretraining run (no checkpoint.pt)")
    from .pretrain.export import export_run

    folder = export_run(ref.path, name, out, include_decoder=decoder, overwrite=overwrite)
    say(f"exported {name} to {folder}")


@click.command("nnunet-plans", context_settings={"max_content_width": 110})
@click.option("--model", required=True, metavar="NAME|PATH", help="Zoo name, zoo folder or pretraining run.")
@click.option("--plans", "plans", required=True, type=click.Path(exists=True, dir_okay=False, path_type=str),
              help="The nnUNetPlans.json nnU-Net made for your data set (nnUNetv2_plan_and_preprocess or "
                   "nnUNetv2_plan_experiment).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Folder for the new plans file, normally nnUNet_preprocessed/DATASET/.")
@click.option("--plans-name", help="New plans identifier (default: the old one + '_' + the model name).")
@click.option("--check", "check", type=click.Path(exists=True, dir_okay=False, path_type=str), metavar="CHECKPOINT",
              help="Also build the network with nnU-Net's own code and load this checkpoint (from "
                   "`pgl-zoo export --format nnunet`) with nnU-Net's loader; needs pgl-zoo[nnunet]. The file is "
                   "read with torch.load(weights_only=True) first (no code in it runs) and only its tensors reach "
                   "nnU-Net's loader, which itself would unpickle anything.")
@click.option("--overwrite", is_flag=True, help="Replace an existing plans file of that name.")
def nnunet_plans_cmd(model: str, plans: str, out: str, plans_name: str | None, check: str | None,
                     overwrite: bool) -> None:
    """Write nnU-Net plans whose 3d_fullres network, spacing, patch and CT window are the model's.

    \b
    Workflow (nnU-Net v2, pip install "pgl-zoo[nnunet]"):
      nnUNetv2_plan_and_preprocess -d 501 -c 3d_fullres --verify_dataset_integrity
      pgl-zoo nnunet-plans --model pgl-ct-tiny --plans $nnUNet_preprocessed/Dataset501_X/nnUNetPlans.json \\
          --out $nnUNet_preprocessed/Dataset501_X/
      nnUNetv2_preprocess -d 501 -c 3d_fullres -plans_name nnUNetPlans_pgl-ct-tiny
      pgl-zoo export pgl-ct-tiny --format nnunet --out pgl-ct-tiny_nnunet.pth
      nnUNetv2_train 501 3d_fullres 0 -p nnUNetPlans_pgl-ct-tiny -pretrained_weights pgl-ct-tiny_nnunet.pth
    """
    import tempfile

    from .nnunet import check_with_nnunet, read_nnunet_checkpoint, require_nnunet, write_nnunet_plans

    dataset_json = Path(plans).parent / "dataset.json"
    if check:  # refuse a bad --check before anything is written
        require_nnunet()
        if not dataset_json.is_file():
            raise PglZooError(f"{dataset_json}: needed by --check (nnU-Net keeps it beside the plans)")
        with tempfile.TemporaryDirectory() as tmp:
            read_nnunet_checkpoint(check, Path(tmp) / "checked.pth")
    path = write_nnunet_plans(model, plans, out, plans_name=plans_name, overwrite=overwrite)
    say(f"wrote {path} (plans identifier {path.stem})")
    if check:
        loaded = check_with_nnunet(path, dataset_json, check)
        say(f"nnU-Net built the 3d_fullres network from {path.name} and loaded {check}: "
                   f"{loaded} parameters outside the segmentation layers")
