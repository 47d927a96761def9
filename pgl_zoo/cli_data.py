"""``pgl-zoo sample-data``: where the sample scans shipped with the package are, and a copy of them.

Torch-free, like ``pgl-zoo list``.
"""

from __future__ import annotations

import click

from .messages import say


@click.command("sample-data")
@click.option("--copy-to", "copy_to", metavar="DIR", type=click.Path(file_okay=False),
              help="Copy the sample (same nnU-Net layout, with dataset.json, README.md and LICENSE) into DIR. "
                   "DIR must be empty or absent unless --overwrite is given.")
@click.option("--overwrite", is_flag=True,
              help="With --copy-to: allow a DIR that already holds files and add the sample beside them. "
                   "Existing files are never replaced: identical ones are kept, a differing one is an error.")
@click.option("--path", "path_only", is_flag=True,
              help="Print only the sample's folder (or the copy's), e.g. for --data \"$(pgl-zoo sample-data --path)\".")
def sample_data_cmd(copy_to: str | None, overwrite: bool, path_only: bool) -> None:
    """Show the sample data shipped with pgl-zoo: six LCTSC chest CTs with expert lung labels.

    \b
    Cases lung_000..lung_005 of the Lung CT Segmentation Challenge 2017 (TCIA), resampled to
    3 mm isotropic and cropped; CT in int16 HU, labels uint8 (0 background, 1 lungs) on the
    image's exact grid; nnU-Net layout (imagesTr/NAME_0000.nii.gz, labelsTr/NAME.nii.gz,
    dataset.json), so `pgl-zoo finetune --data FOLDER --num-classes 2` reads it as-is.
    License CC BY 3.0: attribution required (LICENSE in the folder).

    \b
    Examples:
      pgl-zoo sample-data
      pgl-zoo sample-data --copy-to lungs/
      pgl-zoo finetune --data lungs/ --num-classes 2 --encoder pgl-ct-tiny --out runs/lungs
    In Python: pgl_zoo.datasets.sample_lungs_ct()
    """
    from .datasets import sample_lungs_ct

    if overwrite and not copy_to:
        raise click.UsageError("--overwrite only applies with --copy-to DIR")
    sample = sample_lungs_ct()
    if copy_to:
        try:
            sample = sample.copy_to(copy_to, overwrite=overwrite)
        except FileExistsError as exc:
            raise click.ClickException(str(exc)) from None
    if path_only:
        say(str(sample.folder))
        return
    verb = "copied to" if copy_to else "in"
    say(f"{sample.name}: {len(sample.case_ids)} cases (CT + lung label), "
               f"{sample.size_bytes / 1e6:.1f} MB, {verb} {sample.folder}")
    for case, (image, label) in zip(sample.case_ids, sample.pairs, strict=True):
        say(f"  {case}: {image.relative_to(sample.folder)}  {label.relative_to(sample.folder)}")
    say(f"license: {sample.license_line}")
