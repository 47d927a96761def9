"""``pgl-zoo demo``: the main job in one command (a thin click wrapper over :func:`pgl_zoo.demo.run_demo`)."""

from __future__ import annotations

import click

from .demo import DEFAULT_MODEL, DEMO_ENCODER, FINETUNED_LABELS, PREVIEW, RUN_DIR, SUMMARY, ZOO_LABELS, DemoRecipe

_RECIPE = DemoRecipe()


@click.command("demo")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder. Must be absent or empty unless --overwrite is given.")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, metavar="NAME|PATH",
              help="Part (a): the fine-tuned lung model: a zoo name, an exported model folder or a "
                   "`pgl-zoo finetune` run folder.")
@click.option("--encoder", default=DEMO_ENCODER, show_default=True, metavar="NAME|PATH|none",
              help="Part (b): the PGL encoder to fine-tune from (the recipe was calibrated with pgl-ct-tiny; "
                   "pgl-ct gave Dice 0.893); 'none' trains the same architecture from scratch, for comparison.")
@click.option("--fast", is_flag=True, help="Part (a) only: no fine-tuning (seconds instead of minutes).")
@click.option("--steps", type=click.IntRange(min=1), metavar="N",
              help=f"Part (b): fine-tuning steps (default {_RECIPE.steps}, the calibrated recipe; fewer run faster "
                   "and score lower).")
@click.option("--overwrite", is_flag=True,
              help="Allow a non-empty --out: the demo's own outputs there are replaced, other files are kept.")
@click.option("--device", default="cpu", show_default=True, help="Torch device (cpu, cuda, ...).")
@click.option("--quiet", is_flag=True, help="No progress output (the summary is still written).")
def demo_cmd(out, model, encoder, fast, steps, overwrite, device, quiet) -> None:
    """The main job, offline, on the chest CTs shipped with pgl-zoo (6 LCTSC cases with expert lung labels).

    \b
    (a) segments the held-out case lung_005 with the zoo's fine-tuned lung model (--model) and
        prints its Dice against the expert label;
    (b) fine-tunes a new segmentation network from the zoo's PGL encoder (--encoder) on
        lung_000..lung_004, segments lung_005 with it and prints its Dice.

    \b
    Recipe of (b): {spacing:g} mm isotropic, patch {patch} voxels (z, y, x), CT window {window} HU
    mapped to [0, 1], {steps} AdamW steps of batch {batch} at lr {lr:g}, one epoch (no checkpoint
    is chosen on the held-out case). Dice is measured on the scan's own 3 mm grid. About 3.5 minutes
    on an idle 2-core CPU; --fast takes seconds.

    \b
    Writes into OUT:
      {zoo_labels:<27} (a)'s label map: the input's exact size, spacing, origin, direction
      {ft_labels:<27} (b)'s label map, likewise
      {run_dir:<27} the fine-tuning run; its model/ works with `pgl-zoo segment --model`
      {preview:<27} image, expert label and predictions (three orthogonal slices)
      {summary:<27} Dice, seconds, recipe and machine, as JSON

    \b
    Examples:
      pgl-zoo demo --out demo/
      pgl-zoo demo --out demo/ --fast
      pgl-zoo demo --out demo/ --model runs/lungs --encoder none --overwrite
    """
    from .demo import DemoConfig, run_demo

    run_demo(DemoConfig(out=out, model=model, encoder=encoder, fast=fast, steps=steps, overwrite=overwrite,
                        device=device, progress=not quiet))


demo_cmd.help = demo_cmd.help.format(
    spacing=_RECIPE.spacing_mm, patch=" x ".join(map(str, _RECIPE.patch_size_zyx)),
    window=f"[{_RECIPE.window[0]:g}, {_RECIPE.window[1]:g}]", steps=_RECIPE.steps, batch=_RECIPE.batch_size,
    lr=_RECIPE.lr, zoo_labels=ZOO_LABELS, ft_labels=FINETUNED_LABELS, run_dir=RUN_DIR + "/", preview=PREVIEW,
    summary=SUMMARY,
)
