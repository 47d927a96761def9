"""Run in a subprocess by tests/test_nnunet.py (nnU-Net reads its folders from the environment at import).

argv: WORK MODEL_FOLDER. WORK holds nnUNet_raw/Dataset501_Lungs (two real CT cases); the script
plans and preprocesses with nnU-Net's own code, writes pgl-zoo plans and checkpoint, builds nnU-Net's
network from the plans, loads the checkpoint with nnU-Net's loader, compares encoder features with
pgl-zoo's, then runs one training iteration of nnU-Net's trainer on the CPU. Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

WORK = Path(sys.argv[1])
os.environ.update(nnUNet_raw=str(WORK / "nnUNet_raw"), nnUNet_preprocessed=str(WORK / "nnUNet_preprocessed"),
                  nnUNet_results=str(WORK / "nnUNet_results"), nnUNet_n_proc_DA="1", nnUNet_compile="false")

import torch  # noqa: E402
from nnunetv2.experiment_planning.plan_and_preprocess_api import (  # noqa: E402
    extract_fingerprints,
    plan_experiments,
    preprocess,
)
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights  # noqa: E402
from nnunetv2.run.run_training import maybe_load_checkpoint  # noqa: E402
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer  # noqa: E402
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans  # noqa: E402
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager  # noqa: E402

import pgl_zoo  # noqa: E402
from pgl_zoo.cli import main  # noqa: E402


class OneIterationTrainer(nnUNetTrainer):
    """nnU-Net's trainer, shortened to one training and one validation iteration."""

    def __init__(self, plans: dict, configuration: str, fold, dataset_json: dict,
                 device: torch.device = torch.device("cpu")):  # noqa: B008 (nnU-Net's own signature)
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_iterations_per_epoch = 1
        self.num_val_iterations_per_epoch = 1
        self.num_epochs = 1


def main_script(work: Path, model: str) -> None:
    torch.manual_seed(0)
    dataset = work / "nnUNet_preprocessed" / "Dataset501_Lungs"
    extract_fingerprints([501], num_processes=1, check_dataset_integrity=True, show_progress_bar=False)
    plan_experiments([501])
    checkpoint = work / "pretrained_nnunet.pth"
    for argv in (["nnunet-plans", "--model", model, "--plans", str(dataset / "nnUNetPlans.json"), "--out", str(dataset),
                  "--plans-name", "nnUNetPlans_pgl"],
                 ["export", model, "--format", "nnunet", "--out", str(checkpoint)],
                 # --check on nnU-Net's own plans: the checkpoint is read with weights_only first, then nnU-Net loads it
                 ["nnunet-plans", "--model", model, "--plans", str(dataset / "nnUNetPlans.json"), "--out",
                  str(work / "checked_plans"), "--plans-name", "nnUNetPlans_pgl", "--check", str(checkpoint)]):
        try:
            main(argv)
        except SystemExit as exc:
            assert not exc.code, f"pgl-zoo {argv[0]} failed"
    preprocess([501], plans_identifier="nnUNetPlans_pgl", configurations=("3d_fullres",), num_processes=(1,),
               show_progress_bar=False)

    plans = json.loads((dataset / "nnUNetPlans_pgl.json").read_text())
    dataset_json = json.loads((dataset / "dataset.json").read_text())
    config = PlansManager(plans).get_configuration("3d_fullres")
    net = get_network_from_plans(config.network_arch_class_name, config.network_arch_init_kwargs,
                                 config.network_arch_init_kwargs_req_import, 1, 2, deep_supervision=True)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    load_pretrained_weights(net, str(checkpoint))
    stored = torch.load(checkpoint, weights_only=True)["network_weights"]
    non_head = [k for k in net.state_dict() if ".seg_layers." not in k]
    loaded = [k for k in non_head if torch.equal(net.state_dict()[k], stored[k])]
    changed = [k for k in non_head if not torch.equal(net.state_dict()[k], before[k])]

    encoder = pgl_zoo.load_pgl_encoder(model).eval()
    x = torch.randn(1, 1, *config.patch_size)
    with torch.no_grad():
        ours = encoder(x)
        theirs = net.eval().encoder(x)
    feature_diff = max(float((a - b).abs().max()) for a, b in zip(ours, theirs, strict=True))


    os.environ["nnUNet_n_proc_DA"] = "0"  # augmentation in this process: no worker processes
    # as nnUNetv2_train -pretrained_weights does (nnunetv2.run.run_training): fresh plans, then its loader
    plans = json.loads((dataset / "nnUNetPlans_pgl.json").read_text())
    plans["continue_training"] = False
    trainer = OneIterationTrainer(plans, "3d_fullres", "all", dataset_json, device=torch.device("cpu"))
    maybe_load_checkpoint(trainer, False, False, str(checkpoint))
    start = {k: v.clone() for k, v in trainer.network.state_dict().items() if k.startswith("encoder.")}
    trainer.run_training()
    after = trainer.network.state_dict()
    moved = sum(not torch.equal(after[k], v) for k, v in start.items())
    losses = trainer.logger.local_logger.my_fantastic_logging["train_losses"]
    print(json.dumps({
        "non_head_keys": len(non_head), "loaded": len(loaded), "changed_by_loading": len(changed),
        "feature_diff": feature_diff, "n_features": len(ours), "train_losses": [float(v) for v in losses],
        "encoder_tensors_moved_by_training": moved, "encoder_tensors": len(start),
        "plans_arch": plans["configurations"]["3d_fullres"]["architecture"],
        "plans_spacing": plans["configurations"]["3d_fullres"]["spacing"],
        "plans_patch": plans["configurations"]["3d_fullres"]["patch_size"],
    }))


if __name__ == "__main__":  # nnU-Net starts worker processes with spawn
    main_script(WORK, sys.argv[2])
