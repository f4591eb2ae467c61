"""The `lmstack` command: one group per stage, each a thin call of the library.

Only typer and each stage's small `cli.py` are imported here; torch and the heavy code load
inside the command that needs them, so `lmstack --help` answers at once.
"""

from __future__ import annotations

import os
import sys

import typer

from lmstack.agents.cli import app as agent_app
from lmstack.data.cli import app as data_app
from lmstack.eval import cli as eval_cli
from lmstack.eval.cli import app as eval_app
from lmstack.generate import cli as generate_cli
from lmstack.hub import cli as hub_cli
from lmstack.interp import cli as interp_cli
from lmstack.merge import cli as merge_cli
from lmstack.pretrain.cli import tokenizer_app
from lmstack.prune import cli as prune_cli
from lmstack.quant.cli import app as quant_app
from lmstack.rag.cli import app as rag_app
from lmstack.registry.cli import app as registry_app
from lmstack.serve import cli as serve_cli
from lmstack.train.cli import app as train_app

app = typer.Typer(
    help="An open LLM's whole life on your own machine: load, chat, fine-tune, align, export.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

app.command("pull")(hub_cli.pull)
app.command("models")(hub_cli.models)
app.command("generate")(generate_cli.generate)
app.command("chat")(generate_cli.chat)
app.command("prune")(prune_cli.prune)
app.command("serve")(serve_cli.serve)
app.add_typer(data_app, name="data")
app.add_typer(tokenizer_app, name="tokenizer")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
app.add_typer(registry_app, name="registry")
app.add_typer(quant_app, name="quant")
app.add_typer(rag_app, name="rag")
app.add_typer(agent_app, name="agent")
app.command("leaderboard")(eval_cli.leaderboard)
app.command("merge")(merge_cli.merge)
app.command("abliterate")(interp_cli.abliterate)


@app.command("export")
def export(
    model: str = typer.Argument(..., help="Catalog name, GGUF path, HF directory or registry id."),
    out: str = typer.Argument(..., help="Output directory."),
    format: str = typer.Option("hf", "--format", "-f", help="Output format: hf (a transformers directory)."),
    dtype: str = typer.Option("fp32", "--dtype", help="Weights dtype: fp32, bf16 or fp16."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty OUT folder instead of refusing."),
) -> None:
    """Export a model, e.g. a Hugging Face directory that transformers loads as is."""
    from lmstack.api import load
    from lmstack.hub.export import check_export

    check_export(out, format, dtype, overwrite)  # before the load, which takes seconds
    path = load(model, device="cpu", dtype="fp32").save(out, format=format, dtype=dtype, overwrite=overwrite)
    typer.echo(f"exported {model} to {path}")


# Exit status of an unexpected error (a bug): sysexits' EX_SOFTWARE, so scripts can tell it apart
# from a refused input (1) or a usage error (2).
CRASH_EXIT = 70
# Commands that leave nothing to finish at exit: they skip the interpreter's teardown of torch
# (about half a second of a one-question cold start).
FAST_EXIT_COMMANDS = ("generate", "chat")


def main() -> None:
    """Run the command; every failure ends in one line on stderr and a non-zero exit, no traceback."""
    from lmstack.errors import LmstackError

    # Before any command loads torch (and OpenMP): with the default, spinning wait policy torch's
    # threads hold a core each while they wait, and on a busy machine a step slows 10-50x
    # (bench/contention.py). An OMP_WAIT_POLICY the user set wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    try:
        app()
    except LmstackError as error:
        typer.secho(f"error: {error}", fg="red", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:  # the reader of our output went away (`... | head -1`): nothing to say
        sys.stderr.close()
        sys.exit(1)
    except OSError as error:  # the environment refused (disk full, permissions): not a bug, say what
        where = f": {error.filename}" if error.filename else ""
        typer.secho(f"error: {error.strerror or error}{where}", fg="red", err=True)
        sys.exit(1)
    except Exception as error:  # a bug: one line here, the traceback in a crash log
        typer.secho(f"error: unexpected {type(error).__name__}: {error} (this is a bug in lmstack; the "
                    f"traceback is in {_crash_log(error)})", fg="red", err=True)
        sys.exit(CRASH_EXIT)


def console() -> None:
    """The `lmstack` executable: `main`, then, after generate and chat, an exit without teardown."""
    try:
        main()
    except SystemExit as done:
        if sys.argv[1:2] and sys.argv[1] in FAST_EXIT_COMMANDS:
            _exit_now(done.code)
        raise


def _exit_now(code: int | str | None) -> None:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


def _crash_log(error: BaseException) -> str:
    """Write the traceback under `<lmstack home>/logs/`; the path, or a note if even that fails."""
    import time
    import traceback

    from lmstack.home import lmstack_home

    try:
        folder = lmstack_home() / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{id(error):x}.log"
        path.write_text(f"lmstack {' '.join(sys.argv[1:])}\n\n" + "".join(traceback.format_exception(error)),
                        encoding="utf-8")
        return str(path)
    except Exception:  # noqa: BLE001 - the report of a crash must not crash
        return "(no crash log: the lmstack home is not writable)"


if __name__ == "__main__":
    console()
