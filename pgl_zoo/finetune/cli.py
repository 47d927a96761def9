"""``pgl-zoo finetune``: a thin click command over :func:`pgl_zoo.finetune.finetune`.

Sizes are (z, y, x) voxels; spacings (x, y, z) millimetres, as everywhere in pgl-zoo.
"""

from __future__ import annotations

import click

from ..messages import say
from ..options import (
    NON_NEGATIVE_INT,
    OVERLAP,
    PROBABILITY,
    SizesType,
    SpacingType,
    WindowType,
    config_default,
)
from ..registry import default_encoder
from .config import FinetuneConfig


def _DEFAULT(name: str):  # noqa: N802 - reads as a constant in the option lists
    """The FinetuneConfig default of an option (one home for defaults: the API's)."""
    return config_default(FinetuneConfig, name)


def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


@click.command("finetune")
@click.option("--data", required=True, type=click.Path(exists=False),
              help="Labelled data: an MSD / nnU-Net folder (imagesTr/, labelsTr/, optional dataset.json) "
                   "or a CSV of image,label paths (relative to the CSV).")
@click.option("--encoder", default=default_encoder(), show_default=True, metavar="NAME|PATH|none",
              help="Zoo encoder to start from (registered name or folder with card.json); the default is the "
                   "zoo's best encoder with weights. 'none' trains from scratch on the same architecture (see --arch).")
@click.option("--arch", "arch_from", metavar="NAME|PATH",
              help=f"With --encoder none: the zoo entry whose architecture to use (default {default_encoder()}).")
@click.option("--num-classes", required=True, type=int, help="Number of classes including background (0).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Run folder: config.json, metrics.jsonl, checkpoints/, and the exported model/.")
@click.option("--val-cases", metavar="A,B,...", help="Names of the validation cases (default: a held-out fraction).")
@click.option("--train-cases", metavar="A,B,...", help="Names of the training cases (default: all the others).")
@click.option("--val-fraction", default=_DEFAULT("val_fraction"), show_default=True, type=float,
              help="Fraction of cases held out for validation when --val-cases is not given.")
@click.option("--split-seed", default=_DEFAULT("split_seed"), show_default=True, type=int,
              help="Seed of the train/validation split.")
@click.option("--epochs", default=_DEFAULT("epochs"), show_default=True, type=int,
              help="Epochs (validation after each).")
@click.option("--steps-per-epoch", default=_DEFAULT("steps_per_epoch"), show_default=True, type=int,
              help="Optimiser steps per epoch.")
@click.option("--batch-size", default=_DEFAULT("batch_size"), show_default=True, type=int, help="Patches per step.")
@click.option("--patch-size", type=SizesType(), metavar="Z,Y,X",
              help="Patch (and inference window) size in voxels, whole numbers >= 1, at most 256^3 voxels in all; "
                   "default: the card's.")
@click.option("--lr", default=_DEFAULT("lr"), show_default=True, type=float, help="Peak learning rate (AdamW).")
@click.option("--weight-decay", default=_DEFAULT("weight_decay"), show_default=True, type=float,
              help="AdamW weight decay.")
@click.option("--warmup-steps", type=NON_NEGATIVE_INT,
              help="Linear warm-up steps (>= 0) before cosine decay (default: 5% of all steps).")
@click.option("--init", type=click.Choice(["encoder+decoder", "encoder"]), default=_DEFAULT("init"),
              show_default=True, help="What to take from the pretrained file: encoder and decoder (when the "
                                      "file has one; PGL trains decoder levels) or the encoder only. The head is "
                                      "always new.")
@click.option("--freeze-encoder-epochs", default=_DEFAULT("freeze_encoder_epochs"), show_default=True,
              type=NON_NEGATIVE_INT,
              help="Keep the encoder frozen for this many first epochs.")
@click.option("--freeze-encoder", is_flag=True,
              help="Probe the encoder: keep it frozen for the whole run and train a linear map of its multi-scale "
                   "features (each stage's map through a 1x1x1 convolution, upsampled to the input grid and summed; "
                   "the head of the transfer study's probe) instead of a U-Net decoder. With --encoder none: the "
                   "random-encoder probe. The exported model segments like any other.")
@click.option("--layer-decay", default=_DEFAULT("layer_decay"), show_default=True, type=float,
              help="Layer-wise learning-rate decay: encoder stage i of n at lr*decay**(n-i), stem at "
                   "lr*decay**(n+1) (1 = none).")
@click.option("--foreground-probability", default=_DEFAULT("foreground_probability"), show_default=True,
              type=PROBABILITY,
              help="Fraction of patches centred on a labelled voxel, in [0, 1] (a class drawn uniformly among the "
                   "case's classes, then one of its voxels: small organs are seen as often as large ones).")
@click.option("--spacing", type=SpacingType(("native",)), metavar="X,Y,Z|native",
              help="Override the card's target spacing (mm, > 0) or keep each scan's.")
@click.option("--window", type=WindowType(("none",)), metavar="LOW,HIGH|none",
              help="Override the card's intensity clip window (low < high), or 'none' (MRI).")
@click.option("--normalization", type=click.Choice(["zscore", "minmax", "none"]),
              help="Override the card's intensity normalisation.")
@click.option("--labelled-classes", type=click.Path(dir_okay=False), metavar="FILE",
              help="Partial labels: a JSON of case -> contoured class names or ids (or OpenKBP's structures.json "
                   "shape, case -> {\"structures\": [...]}). A class not listed for a case is unknown there, not "
                   "background: training uses the marginal loss (its probability is merged into background) and "
                   "validation scores it only where contoured. Every case must be listed.")
@click.option("--modality", help="Modality recorded in the exported card (default: the encoder card's).")
@click.option("--overlap", default=_DEFAULT("overlap"), show_default=True, type=OVERLAP,
              help="Sliding-window overlap in validation, in [0, 1).")
@click.option("--seed", default=_DEFAULT("seed"), show_default=True, type=int,
              help="Seed of initialisation and patch sampling.")
@click.option("--device", default=_DEFAULT("device"), show_default=True, help="Torch device (cpu, cuda, cuda:1, ...).")
@click.option("--name", help="Name written in the exported model card (default: the run folder's name).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint (same options; "
                                            "--epochs, --device may change).")
@click.option("--overwrite", is_flag=True, help="Allow an --out folder that already holds other files.")
@click.option("--no-progress", is_flag=True, help="No progress bar or per-epoch line.")
def finetune_cmd(data, encoder, init, arch_from, num_classes, out, val_cases, train_cases, val_fraction, split_seed,
                 epochs, steps_per_epoch, batch_size, patch_size, lr, weight_decay, warmup_steps,
                 freeze_encoder_epochs, freeze_encoder, layer_decay, foreground_probability, spacing, window,
                 normalization, labelled_classes, modality, overlap, seed, device, name, resume, overwrite,
                 no_progress) -> None:
    """Fine-tune a pgl_unet3d on labelled data (Dice + cross-entropy); export the best model to OUT/model."""
    from .config import FinetuneConfig
    from .trainer import finetune

    config = FinetuneConfig(
        out=out, num_classes=num_classes, data=data, encoder=encoder, init=init, arch_from=arch_from,
        train_cases=_names(train_cases), val_cases=_names(val_cases), val_fraction=val_fraction,
        split_seed=split_seed, epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size,
        patch_size_zyx=patch_size, lr=lr, weight_decay=weight_decay,
        warmup_steps=warmup_steps, freeze_encoder_epochs=freeze_encoder_epochs, freeze_encoder=freeze_encoder,
        layer_decay=layer_decay, foreground_probability=foreground_probability, spacing_xyz_mm=spacing,
        window=window, normalization=normalization, labelled_classes=labelled_classes, modality=modality,
        overlap=overlap, seed=seed, device=device, name=name, resume=resume, overwrite=overwrite,
        progress=not no_progress,
    )
    result = finetune(config)
    say(f"best validation Dice {result.best_mean_dice:.4f} at epoch {result.best_epoch} "
               f"({', '.join(f'{k} {v:.4f}' for k, v in result.best_dice.items())}); model in {result.model_dir}")
