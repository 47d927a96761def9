"""Make pgl_zoo/bundled/pgl-ct-tiny/ from a finished pretraining run (the recipe in the registry card).

    python scripts/bundle_pgl_ct_tiny.py runs/pgl-ct-tiny

Exports the run (encoder and the decoder levels the local loss trained), adds what the registry
card records beyond the run (status, license, attribution, recipe, hardware) and writes the
bundled folder with save_pretrained. Prints the sha256 to pin in pgl_zoo/registry.py.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from safetensors.torch import load_file

from pgl_zoo.cards import BUNDLED, ModelCard
from pgl_zoo.pretrain.export import export_run
from pgl_zoo.registry import get_card
from pgl_zoo.weights import BUNDLED_DIR, save_pretrained

ATTRIBUTION = [
    "totalseg_patient_a: TotalSegmentator example CT (wasserth/TotalSegmentator), data CC BY 4.0",
    "chest_dicom_series: InsightSoftwareConsortium/ITKElastix example data, Apache-2.0",
    "liver_3slice_dicom: QIICR/dcmqi test data, BSD-3-Clause",
    "not_hu/CT_AVM, CT_pitch: niivue/niivue-demo-images, BSD-2-Clause",
    "not_hu/LIDC2: Kitware/vtk-js-datasets (BSD-3-Clause) from LIDC-IDRI, CC BY 3.0",
    "more/lidc_0314_chest: LIDC-IDRI-0314 (CC BY 3.0) via FNNDSC/data (Apache-2.0)",
    "more/pancreas_ct_cb_001_abdomen: TCIA Pancreatic-CT-CBCT-SEG, Pancreas-CT-CB_001, CC BY 4.0",
    "more/slicer_ctchest4: 3D Slicer CTChest sample via lassoan/slicerio, MIT",
]


def main(run: str) -> None:
    registered = get_card("pgl-ct-tiny")
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_run(run, "pgl-ct-tiny", Path(tmp) / "export", include_decoder=True)
        exported = ModelCard.from_json_file(folder / "card.json")
        state = load_file(str(folder / "model.safetensors"))
    training = dict(exported.training)
    training.update(
        batch_size=training["config"]["batch_size"],
        attribution=ATTRIBUTION,
        non_hu_policy="rescale: the three 8-bit/windowed head and chest scans were mapped [min, max] -> [-1024, 325]",
        recipe=registered.training["recipe"],
        hardware="2-core x86_64 CPU shared with other work, torch 2.14.1: 55 min wall time (steps 1-134 on one "
                 "thread, stopped with Ctrl-C and resumed exactly with --resume on two threads)",
        excluded="ct/lctsc_lungs (the labelled chest CTs kept for transfer studies) was not used",
    )
    card = exported.replace(
        summary=registered.summary, status=BUNDLED, license=registered.license, hub_repo_id=registered.hub_repo_id,
        training=training, notes=registered.notes)
    out = save_pretrained(state, card, BUNDLED_DIR / "pgl-ct-tiny")
    print(ModelCard.from_json_file(out / "card.json").sha256)


if __name__ == "__main__":
    main(sys.argv[1])
