"""Run pgl-zoo in a fresh process, as a user would, with extra cards registered first.

    python tests/_hub_client.py CARDS.json cli ARGS...     the pgl-zoo command line
    python tests/_hub_client.py CARDS.json load NAME       load_pgl_encoder(NAME): prints its load report as JSON
    python tests/_hub_client.py CARDS.json download NAME   pgl_zoo.weights.download(NAME): prints the path

CARDS.json is a JSON list of cards (``ModelCard.to_dict``) added to the registry before the command
runs. huggingface_hub reads HF_ENDPOINT, HF_HUB_CACHE and HF_HUB_OFFLINE when it is imported, so
tests start this script with those variables set instead of changing them in the test process.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import pgl_zoo
from pgl_zoo.registry import register


def main(cards_file: str, command: str, *args: str) -> None:
    for data in json.loads(Path(cards_file).read_text()):
        register(pgl_zoo.ModelCard.from_dict(data))
    if command == "cli":
        from pgl_zoo.cli import main as cli_main

        cli_main(list(args))
    elif command == "load":
        encoder = pgl_zoo.load_pgl_encoder(args[0])
        report = asdict(encoder.load_report)
        report["complete"] = encoder.load_report.complete
        print(json.dumps(report))
    elif command == "download":
        from pgl_zoo.weights import download

        print(download(args[0]))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
