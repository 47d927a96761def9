"""``pgl-zoo sample-data``: where the sample scans shipped with the package are, and a copy of them.

Two sets (``--set``): ``lctsc_lungs`` (the default: six LCTSC chest CTs with lung labels) and
``openkbp_hn`` (two OpenKBP head-and-neck CTs with seven organs at risk). Torch-free, like
``pgl-zoo list``.
"""

from __future__ import annotations

import click

from .datasets import SAMPLE_SETS
from .messages import say

# set name -> what each case holds, for the summary line
_CONTENT = {"lctsc_lungs": "CT + lung label", "openkbp_hn": "CT + 7 organs at risk"}


@click.command("sample-data")
@click.option("--set", "sample_set", type=click.Choice(sorted(SAMPLE_SETS)), default="lctsc_lungs",
              show_default=True,
              help="Which sample: lctsc_lungs (six chest CTs, lung label; CC BY 3.0) or openkbp_hn (two "
                   "head-and-neck CTs of OpenKBP's test split, seven organs at risk, with structures.json; "
                   "research use).")
@click.option("--copy-to", "copy_to", metavar="DIR", type=click.Path(file_okay=False),
              help="Copy the sample (same nnU-Net layout, with dataset.json, README.md and LICENSE) into DIR. "
                   "DIR must be empty or absent unless --overwrite is given.")
@click.option("--overwrite", is_flag=True,
              help="With --copy-to: allow a DIR that already holds files and add the sample beside them. "
                   "Existing files are never replaced: identical ones are kept, a differing one is an error.")
@click.option("--path", "path_only", is_flag=True,
              help="Print only the sample's folder (or the copy's), e.g. for --data \"$(pgl-zoo sample-data --path)\".")
def sample_data_cmd(sample_set: str, copy_to: str | None, overwrite: bool, path_only: bool) -> None:
    """Show the sample data shipped with pgl-zoo: LCTSC chest CTs (default) or OpenKBP head-and-neck CTs.

    \b
    --set lctsc_lungs (default): six LCTSC chest CTs with expert lung labels. Cases
    lung_000..lung_005 of the Lung CT Segmentation Challenge 2017 (TCIA), resampled to
    3 mm isotropic and cropped; CT in int16 HU, labels uint8 (0 background, 1 lungs) on the
    image's exact grid; nnU-Net layout (imagesTr/NAME_0000.nii.gz, labelsTr/NAME.nii.gz,
    dataset.json), so `pgl-zoo finetune --data FOLDER --num-classes 2` reads it as-is.
    License CC BY 3.0: attribution required (LICENSE in the folder).

    \b
    --set openkbp_hn: two head-and-neck planning CTs of OpenKBP's test split (hn_247, hn_286),
    copied unchanged (128x128x128 voxels, spacing per patient); labels uint8 0 background,
    1 Brainstem, 2 SpinalCord, 3 RightParotid, 4 LeftParotid, 5 Esophagus, 6 Larynx, 7 Mandible;
    structures.json lists each case's contoured organs (for --labelled-classes). Research use:
    OpenKBP repository MIT, CTs from TCIA collections; cite Babier et al., Med Phys 2021.

    \b
    Examples:
      pgl-zoo sample-data
      pgl-zoo sample-data --copy-to lungs/
      pgl-zoo finetune --data lungs/ --num-classes 2 --encoder pgl-ct-tiny --out runs/lungs
      pgl-zoo sample-data --set openkbp_hn --copy-to hn/
    In Python: pgl_zoo.datasets.sample_lungs_ct(), pgl_zoo.datasets.sample_hn_ct()
    """
    if overwrite and not copy_to:
        raise click.UsageError("--overwrite only applies with --copy-to DIR")
    sample = SAMPLE_SETS[sample_set]()
    if copy_to:
        try:
            sample = sample.copy_to(copy_to, overwrite=overwrite)
        except FileExistsError as exc:
            raise click.ClickException(str(exc)) from None
    if path_only:
        say(str(sample.folder))
        return
    verb = "copied to" if copy_to else "in"
    say(f"{sample.name}: {len(sample.case_ids)} cases ({_CONTENT[sample.name]}), "
        f"{sample.size_bytes / 1e6:.1f} MB, {verb} {sample.folder}")
    for case, (image, label) in zip(sample.case_ids, sample.pairs, strict=True):
        say(f"  {case}: {image.relative_to(sample.folder)}  {label.relative_to(sample.folder)}")
    if sample.labelled_classes_file is not None:
        say(f"labelled classes: {sample.labelled_classes_file} (for --labelled-classes)")
    say(f"license: {sample.license_line}")
