"""``pgl-zoo pretrain`` and ``pgl-zoo prepare``: thin click commands over the pretrain package
(``pgl-zoo export`` lives in :mod:`pgl_zoo.cli_export`)."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from ..cards import NORMALIZATIONS
from ..errors import PglZooError
from ..messages import say, warn
from ..options import (
    NON_NEGATIVE_FLOAT,
    NON_NEGATIVE_INT,
    FiniteFloatRange,
    SizesType,
    SpacingType,
    WindowType,
    config_default,
)
from ..runs import read_json
from .config import PretrainConfig


def _numbers(kind, count: int, name: str):
    def convert(ctx, param, value):
        if value is None:
            return None
        try:
            parts = [kind(v) for v in str(value).replace("x", ",").split(",") if v.strip()]
        except ValueError:
            raise click.BadParameter(f"expected {count} comma-separated numbers, got {value!r}") from None
        if count and len(parts) != count:
            raise click.BadParameter(f"expected {count} comma-separated numbers ({name}), got {value!r}")
        return tuple(parts)
    return convert


def _DEFAULT(name: str):  # noqa: N802 - reads as a constant in the option lists
    """The PretrainConfig default of an option (one home for defaults: the API's)."""
    return config_default(PretrainConfig, name)


def _default(name: str) -> str:
    """The PretrainConfig default of a range option, as the CLI writes it."""
    return ",".join(str(v) for v in _DEFAULT(name))


# option name in PretrainConfig -> click parameter name (when they differ)
_PARAM_TO_FIELD = {"crop_scale": "scale_range", "overlap": "overlap_range", "local_scales": "local_levels",
                   "warmup": "warmup_steps",
                   "momentum": "base_momentum"}


# The options that decide a cache entry (and -j): one definition for `pretrain` and `prepare`.
MODEL_OPTION = click.option(
    "--model", default=_DEFAULT("model"), show_default=True,
    help="Model card giving the architecture, preprocessing and default patch size: a registered name (pgl-zoo list) "
         "or a card.json file.")
SPACING_OPTION = click.option(
    "--spacing", type=SpacingType(), metavar="X,Y,Z",
    help="Target voxel spacing in mm (> 0), (x, y, z). Default: the card's (pgl-ct-tiny: 2,2,2).")
WINDOW_OPTION = click.option(
    "--window", type=WindowType(), metavar="LO,HI",
    help="Intensity clip in scan units before normalisation, LO < HI. Default: the card's ([-1024, 325] HU).")
NORMALIZATION_OPTION = click.option(
    "--normalization", type=click.Choice(NORMALIZATIONS),
    help="Intensity normalisation after the window: zscore (per volume), minmax (the window onto [0, 1]) or none. "
         "Default: the card's (zscore).")
NON_HU_OPTION = click.option(
    "--non-hu", type=click.Choice(["skip", "rescale", "keep"]), default=_DEFAULT("non_hu"), show_default=True,
    help="CT scans not in HU (no value below -500, e.g. uint8 0..255): skip them, rescale their [min, max] onto the "
         "window, or keep the values. Each is reported with a warning.")
CACHE_OPTION = click.option(
    "--cache-dir", type=click.Path(path_type=str), default=None,
    help="Where preprocessed volumes are cached (int16 HU for CT, float16 otherwise; found again by file size and "
         "modification time, content hashed once). Default: $PGL_ZOO_CACHE or ~/.cache/pgl_zoo/preprocessed.")
JOBS_OPTION = click.option(
    "-j", "--jobs", type=click.IntRange(min=1), default=None,
    help="Processes (per rank) preparing volumes not yet in the cache. Default: the CPU count per rank, at most 8.")


@click.command("pretrain", context_settings={"max_content_width": 110})
@click.option("--data", "data", multiple=True, type=click.Path(exists=True, path_type=str),
              help="Folder (searched recursively) or file of scans: .nii/.nii.gz/.nrrd/.mha/.mhd and DICOM "
                   "series. Repeat for several. Not needed with --resume.")
@click.option("--out", required=True, type=click.Path(path_type=str),
              help="Run folder: checkpoint.pt, metrics.jsonl, config.json, summary.json, loss.png.")
@MODEL_OPTION
@click.option("--patch-size", type=SizesType(minimum=2), metavar="Z,Y,X",
              help="Patch (view) size in voxels, (z, y, x); whole numbers, a multiple of the network stride, at most "
                   "256^3 voxels in all. Default: the card's.")
@SPACING_OPTION
@WINDOW_OPTION
@NORMALIZATION_OPTION
@click.option("--batch-size", default=_DEFAULT("batch_size"), show_default=True, type=int,
              help="View pairs per step and per process (rank).")
@click.option("--steps", default=_DEFAULT("steps"), show_default=True, type=int,
              help="Total optimisation steps of the run.")
@click.option("--lr", default=_DEFAULT("lr"), show_default=True, type=float, help="Peak learning rate.")
@click.option("--weight-decay", default=_DEFAULT("weight_decay"), show_default=True, type=float,
              help="Weight decay (not applied to biases and norm parameters).")
@click.option("--optimizer", type=click.Choice(["adamw", "lars"]), default=_DEFAULT("optimizer"), show_default=True,
              help="AdamW (project default) or LARS (the paper's, reportedly lr 0.2 at batch 128).")
@click.option("--warmup", type=NON_NEGATIVE_INT, default=None,
              help="Linear warm-up steps (>= 0) before cosine decay. Default: 5% of --steps.")
@click.option("--clip-grad", default=_DEFAULT("clip_grad"), show_default=True, type=NON_NEGATIVE_FLOAT,
              help="Gradient-norm clipping (>= 0); 0 disables.")
@click.option("--momentum", default=_DEFAULT("base_momentum"), show_default=True, type=FiniteFloatRange(0, 1),
              help="Base EMA momentum of the target network, in [0, 1] (rises to 1 on a cosine).")
@click.option("--local-weight", default=_DEFAULT("local_weight"), show_default=True, type=float,
              help="lambda in L = L_global + lambda * L_local; 0 gives the BYOL (global-only) baseline.")
@click.option("--local-scales", callback=_numbers(int, 0, "levels"), metavar="I[,J...]",
              help="Decoder levels for the local loss (0 = full resolution; level i has the stride of encoder "
                   "stage i). Default: the coarsest decoder level.")
@click.option("--crop-scale", default=_default("scale_range"), show_default=True,
              callback=_numbers(float, 2, "lo,hi"), metavar="LO,HI",
              help="Range of the crop size as a multiple of the patch size, drawn per view (the paper's quoted "
                   "value: 1.1,1.4).")
@click.option("--overlap", default=_default("overlap_range"), show_default=True, callback=_numbers(float, 2, "lo,hi"),
              metavar="LO,HI", help="Range of the two crops' overlap (intersection / smaller crop), realised "
                                    "exactly per pair and logged.")
@click.option("--local-control", type=click.Choice(["none", "shuffled"]), default=_DEFAULT("local_control"),
              show_default=True,
              help="shuffled: the control run, whose local loss matches target features at randomly permuted "
                   "positions (no correspondence); its local loss should end clearly above an aligned run's.")
@click.option("--rotate/--no-rotate", default=_DEFAULT("rotate"), show_default=True,
              help="Also rotate views by random multiples of 90 degrees in the axial plane.")
@NON_HU_OPTION
@click.option("--workers", type=int, default=None,
              help="Data-loading processes per rank (0: load in the main process). Default: CPU count per rank, <= 8.")
@JOBS_OPTION
@click.option("--seed", default=_DEFAULT("seed"), show_default=True, type=int,
              help="Seed of initialisation, views and augmentations.")
@click.option("--checkpoint-every", default=_DEFAULT("checkpoint_every"), show_default=True, type=NON_NEGATIVE_INT,
              help="Write checkpoint.pt (atomically) every N steps (0: only at the end and on Ctrl-C, when it is "
                   "always written).")
@click.option("--log-every", type=click.IntRange(min=1), default=None,
              help="Every N steps (and at the last step): a line of metrics.jsonl (losses, collapse indicators, "
                   "views/s over those N steps), the check that the loss is finite (a non-finite loss stops the run "
                   "naming its first step; no checkpoint is written after it) and the progress bar's loss. Only "
                   "these steps wait for a GPU to finish its queued work; a GPU run should use 10-50. Default: 1 on "
                   "the CPU, 10 on CUDA. summary.json's final losses are the mean of the last 10 logged steps.")
@click.option("--stop-after", type=int, default=None,
              help="Stop after N steps of this invocation (with a checkpoint); continue later with --resume.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its checkpoint (its stored options; you may change --steps, "
                   "--stop-after, --workers, --jobs, --checkpoint-every, --log-every, --device, --compile, "
                   "--cache-dir, --data).")
@click.option("--overwrite", is_flag=True,
              help="Allow an --out folder that holds other files (they are kept, but config.json, metrics.jsonl, "
                   "summary.json and loss.png are replaced). Without it --out must be new, empty, or a pretraining "
                   "run that stopped before its first checkpoint; a run with a checkpoint needs --resume.")
@click.option("--amp", type=click.Choice(["auto", "bf16", "off"]), default=_DEFAULT("amp"), show_default=True,
              help="Mixed precision: bf16 autocast on CUDA (auto/bf16); CPU always runs float32.")
@click.option("--compile", "compile_", is_flag=True, help="Wrap the online network in torch.compile.")
@CACHE_OPTION
@click.option("--device", default=_DEFAULT("device"), show_default=True,
              help="auto (cuda:LOCAL_RANK if available, else cpu), cpu, cuda or cuda:N.")
@click.pass_context
def pretrain_cmd(ctx: click.Context, **options) -> None:
    """PGL self-supervised pretraining on a folder of scans (no preparation step needed).

    \b
    Example:  pgl-zoo pretrain --data ./ct --out runs/tiny --steps 2000
    Multi-GPU: torchrun --nproc_per_node=4 -m pgl_zoo.cli pretrain --data ./ct --out runs/x
    Multi-node: the same on each node, with --nnodes=N --rdzv-backend=c10d --rdzv-endpoint=HOST:PORT.
    A large archive: run `pgl-zoo prepare` with the same options first (or let the ranks share it).
    """
    from .config import PretrainConfig
    from .trainer import pretrain

    options["compile"] = options.pop("compile_")
    given = {name for name in ctx.params if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
    given = {("compile" if n == "compile_" else n) for n in given}
    values = {_PARAM_TO_FIELD.get(k, k): v for k, v in options.items()}
    values["data"] = list(values["data"])
    if options["resume"]:
        stored_path = Path(options["out"]) / "config.json"
        if not stored_path.is_file():
            raise PglZooError(f"{options['out']}: no run to resume (config.json missing)")
        stored = read_json(stored_path)
        if not isinstance(stored, dict):
            raise PglZooError(f"{stored_path}: not a run configuration (a JSON object), but {type(stored).__name__}")
        stored = PretrainConfig.from_dict(stored, source=stored_path).to_dict()  # a hand-edited file, named
        stored["stop_after"] = None  # --stop-after applies to the invocation that gives it, never to later ones
        for name in given:
            stored[_PARAM_TO_FIELD.get(name, name)] = values[_PARAM_TO_FIELD.get(name, name)]
        stored["resume"] = True
        values = stored
    if not values["data"]:
        raise PglZooError("--data is required (a folder of scans)")
    pretrain(PretrainConfig.from_dict(values))


@click.command("prepare", context_settings={"max_content_width": 110})
@click.option("--data", "data", multiple=True, required=True, type=click.Path(exists=True, path_type=str),
              help="Folder (searched recursively) or file of scans, as for pretrain. Repeat for several.")
@MODEL_OPTION
@SPACING_OPTION
@WINDOW_OPTION
@NORMALIZATION_OPTION
@NON_HU_OPTION
@CACHE_OPTION
@JOBS_OPTION
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def prepare_cmd(data, model, spacing, window, normalization, non_hu, cache_dir, jobs, no_progress) -> None:
    """Fill the pretraining cache in parallel, once, before `pgl-zoo pretrain` (like nnU-Net's preprocessing -np).

    Reads, checks and resamples every scan as `pgl-zoo pretrain` would with the same options, in -j processes;
    a later pretrain (or prepare) finds each entry by file size and modification time and starts in seconds.
    Interrupt it at any time: finished scans are kept; several prepare runs may share one cache folder.

    \b
    Example:  pgl-zoo prepare --data ./ct --model pgl-ct -j 8
              pgl-zoo pretrain --data ./ct --model pgl-ct --out runs/ct
    """
    import time

    from .data import default_cache_dir, prepare_volumes
    from .trainer import resolve_preprocessing

    cfg = PretrainConfig(data=list(data), model=model, spacing=spacing, window=window, normalization=normalization,
                         non_hu=non_hu, cache_dir=cache_dir, jobs=jobs)
    card, prep = resolve_preprocessing(cfg)
    started = time.perf_counter()
    prepared = prepare_volumes(cfg.data, prep, card.modality, cfg.non_hu, cfg.cache_dir,
                               warn=warn, jobs=cfg.resolved_jobs,
                               progress=not no_progress)
    folder = cache_dir or default_cache_dir()
    size = sum(v.array_path.stat().st_size for v in prepared.volumes if v.array_path is not None)
    say(f"{prepared.summary()}; {prepared.prepared} prepared now with {cfg.resolved_jobs} process(es) in "
               f"{time.perf_counter() - started:.1f} s; cache {folder}: {size / 2**30:.2f} GiB for these volumes")
