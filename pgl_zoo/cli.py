"""The ``pgl-zoo`` command line: a click group whose commands are thin calls into the package.

Commands are imported only when run (``LazyGroup``), so ``pgl-zoo list`` never imports torch.
Every error is printed as one line on stderr with a non-zero exit; set PGL_ZOO_DEBUG=1 for the
traceback.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from .messages import error, warnings_as_lines

# command name -> "module:attribute"; each module keeps its own heavy imports.
COMMANDS = {
    "demo": "pgl_zoo.cli_demo:demo_cmd",
    "list": "pgl_zoo.cli_zoo:list_cmd",
    "info": "pgl_zoo.cli_zoo:info_cmd",
    "download": "pgl_zoo.cli_zoo:download_cmd",
    "push": "pgl_zoo.cli_zoo:push_cmd",
    "prepare": "pgl_zoo.pretrain.cli:prepare_cmd",
    "pretrain": "pgl_zoo.pretrain.cli:pretrain_cmd",
    "export": "pgl_zoo.cli_export:export_cmd",
    "nnunet-plans": "pgl_zoo.cli_export:nnunet_plans_cmd",
    "finetune": "pgl_zoo.finetune.cli:finetune_cmd",
    "segment": "pgl_zoo.cli_segment:segment_cmd",
    "evaluate": "pgl_zoo.cli_segment:evaluate_cmd",
    "sample-data": "pgl_zoo.cli_data:sample_data_cmd",
}


class LazyGroup(click.Group):
    """A click group that imports a command's module only when that command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("pgl_zoo"):
                return None  # command not available in this version
            raise
        return getattr(module, attribute)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        """click's lookup, with "did you mean ...?" for a misspelt command."""
        name = click.utils.make_str(args[0])
        if name not in COMMANDS and not name.startswith("-"):
            from .suggest import did_you_mean

            ctx.fail(f"No such command {name!r}" + (did_you_mean(name, COMMANDS) or "."))
        return super().resolve_command(ctx, args)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="pgl-zoo")
@click.option("--offline", is_flag=True, help="Never touch the network (sets HF_HUB_OFFLINE=1).")
@click.option("--endpoint", metavar="URL", help="Hugging Face Hub endpoint or mirror (sets HF_ENDPOINT).")
def cli(offline: bool, endpoint: str | None) -> None:
    """pgl-zoo: PGL-pretrained 3D encoders for medical image segmentation.

    \b
    Main job:      pgl-zoo demo --out demo/   (offline, on the sample chest CTs; --help for what it does)
    Use a model:   pgl-zoo list | info NAME | download --model NAME
    Train:         pgl-zoo pretrain --data ./ct/ --out RUN ; pgl-zoo export RUN --name N --out DIR
    nnU-Net:       pgl-zoo nnunet-plans --model N --plans P.json --out DIR ; export N --format nnunet --out F
    Segment:       pgl-zoo finetune ... ; pgl-zoo segment SCAN -o OUT --model RUN ; pgl-zoo evaluate
    Sample data:   pgl-zoo sample-data [--set openkbp_hn] [--copy-to DIR]
    """
    # Applied before any command imports huggingface_hub (which reads them at import time).
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    if endpoint:
        os.environ["HF_ENDPOINT"] = endpoint


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning any exception into one line on stderr and exit code 1."""
    warnings_as_lines()
    try:
        cli.main(args=argv, prog_name="pgl-zoo", standalone_mode=False)
    except click.exceptions.Abort:
        error("", prefix="aborted")
        sys.exit(130)
    except click.UsageError as exc:  # one line, like every other error, naming the option and where to look
        command = exc.ctx.command_path if exc.ctx is not None else "pgl-zoo"
        error(f"{' '.join(exc.format_message().split())} (see '{command} --help')")
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        error("", prefix="interrupted")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the CLI's promise: one line, no traceback
        if os.environ.get("PGL_ZOO_DEBUG"):
            raise
        from .errors import PglZooError

        # The whole message on one line (a state-dict error names what mismatched on its later lines).
        message = " ".join(str(exc).split())[:600] or type(exc).__name__
        prefix = "error" if isinstance(exc, PglZooError) else f"error ({type(exc).__name__})"
        error(message, prefix)
        sys.exit(1)


if __name__ == "__main__":
    main()
