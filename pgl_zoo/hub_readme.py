"""The Hugging Face model card (README.md with YAML front matter) written next to saved weights."""

from __future__ import annotations

import json

from .cards import ModelCard

_HF_LICENSES = {
    "apache-2.0": "apache-2.0",
    "mit": "mit",
    "cc by 4.0": "cc-by-4.0",
    "cc-by-4.0": "cc-by-4.0",
    "cc by-sa 4.0": "cc-by-sa-4.0",
    "cc-by-sa-4.0": "cc-by-sa-4.0",
    "cc by-nc 4.0": "cc-by-nc-4.0",
}


def hf_license(license_text: str) -> str:
    return _HF_LICENSES.get(license_text.strip().lower(), "other")


def render_hub_readme(card: ModelCard) -> str:
    """Markdown model card: what the weights are, how to load them, preprocessing, training, citation."""
    prep = card.preprocessing
    tags = ["medical-imaging", "3d", "pgl", "self-supervised-learning", card.modality.lower(), "pgl-zoo"]
    lines = [
        "---",
        f"license: {hf_license(card.license)}",
        "library_name: pgl-zoo",
        "tags:",
        *[f"- {t}" for t in tags],
        "---",
        "",
        f"# {card.name}",
        "",
        card.summary,
        "",
        f"**Status:** {card.status}. **Task:** {card.task}. **Modality:** {card.modality}.",
        "",
    ]
    if card.notes:
        lines += [card.notes, ""]
    lines += [
        "## Use",
        "",
        "```python",
        "import pgl_zoo",
        f'encoder = pgl_zoo.load_pgl_encoder("{card.name}")          # or weights="path/to/this/folder"',
        f'net = pgl_zoo.pgl_unet3d(num_classes=3, encoder="{card.name}")  # encoder + new decoder/head',
        "```",
        "",
        "## Input expected",
        "",
        "| what | value |",
        "|---|---|",
        f"| architecture | {card.architecture} {json.dumps(card.arch)} |",
        f"| input channels | {card.in_channels} |",
        f"| spacing (x, y, z) mm | {prep.spacing_xyz_mm if prep.spacing_xyz_mm else 'native'} |",
        f"| orientation (ITK code) | {prep.orientation} |",
        f"| intensity window | {prep.window if prep.window else 'none'} |",
        f"| normalisation | {prep.normalization} |",
        f"| patch size (z, y, x) voxels | {card.patch_size_zyx} |",
        f"| file contents | {', '.join(card.contents)} |",
        f"| sha256 of {card.filename} | `{card.sha256 or 'n/a'}` |",
        "",
    ]
    if card.label_names:
        lines += ["## Labels", "", *[f"- {k}: {v}" for k, v in sorted(card.label_names.items(),
                                                                      key=lambda kv: int(kv[0]))], ""]
    measured = card.evaluation["summary"] if card.evaluation else "Not measured: the card records no result."
    lines += ["## Evaluation", "", measured, ""]
    details = {k: v for k, v in (card.evaluation or {}).items() if k != "summary"}
    if details:
        lines += ["```json", json.dumps(details, indent=2), "```", ""]
    if card.training:
        lines += ["## Training", "", "```json", json.dumps(card.training, indent=2), "```", ""]
    lines += [f"## License\n\n{card.license}\n", "## Citation", "", "```bibtex", card.citation, "```", ""]
    return "\n".join(lines)
