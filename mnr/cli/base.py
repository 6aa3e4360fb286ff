"""The `mnr` command group and what its commands share: error handling, the config options."""

from __future__ import annotations

import os
import signal
from typing import Any

import click

from mnr.errors import MnrError
from mnr.interrupts import interrupts_as_keyboard

# MLflow's telemetry thread can race the environment reads of torchrun ranks (a KeyError on
# _MLFLOW_TELEMETRY_SESSION_ID, seen in the scaling tests); off unless the user says otherwise.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Group(click.Group):
    """A group that turns `MnrError` into a one-line message and a non-zero exit, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MnrError as exc:
            click.echo(f"mnr: error: {exc}", err=True)
            ctx.exit(2)


def blank_is_none(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """MLproject passes every parameter; an empty one means "not given" (use the config's)."""
    return None if value in ("", None) else value


def convert(kind: type, name: str):
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        value = blank_is_none(ctx, param, value)
        if value is None:
            return None
        try:
            return kind(value)
        except ValueError:
            raise click.BadParameter(
                f"{value!r} is not a valid {kind.__name__}", param_hint=name
            ) from None

    return callback


@click.group(cls=Group, context_settings=CONTEXT)
@click.version_option(package_name="mnr")
@click.option("-v", "--verbose", is_flag=True, help="Show libraries' INFO logs and every warning.")
def main(verbose: bool) -> None:
    """mnr: recognise which of the 88 piano keys sounds in a mel-spectrogram image.

    Train, tune, track (MLflow) and serve CNNs on data in the Kaggle "Music Scale Recognition"
    layout; with no --data, commands use the built-in synthetic dataset.
    """
    from mnr.console import configure_console

    configure_console(verbose=verbose)


# ------------------------------------------------------------- options shared by train, tune, cv
CONFIG_OPTIONS = (  # shared by train, tune and cv: which config, which data, and the overrides
    click.option("--model", callback=blank_is_none, default=None, help="Registered model name (default: baseline_cnn)."),
    click.option("--config", "config_file", callback=blank_is_none, default=None,
                 help="Experiment YAML, or the name of a shipped one (default: experiments/MODEL.yaml)."),
    click.option("--model-module", callback=blank_is_none, default=None,
                 help="A .py file or module whose @register_model models become available."),
    click.option("--data", callback=blank_is_none, default=None,
                 help="Labelled folder or dataset root (default: the built-in dataset; builtin:specshow "
                 "and builtin:imshow are the same notes drawn as figures)."),
    click.option("--epochs", callback=convert(int, "--epochs"), default=None, help="Epochs (default: the config's)."),
    click.option("--seed", callback=convert(int, "--seed"), default=None, help="Random seed."),
    click.option("--experiment", callback=blank_is_none, default=None, help="MLflow experiment name."),
    click.option("-s", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
                 help="Override any config key, e.g. -s optim.name=adamw -s train.augment.enabled=true."),
    click.option("-q", "--quiet", is_flag=True, help="No progress bars or per-epoch lines."),
)  # fmt: skip


def config_options(f):
    """Decorate a command with `CONFIG_OPTIONS`, in the order they are listed."""
    for option in reversed(CONFIG_OPTIONS):
        f = option(f)
    return f


def sigterm_as_ctrl_c() -> None:
    """SIGTERM behaves like Ctrl-C until the command ends: the engine saves, the run is marked
    KILLED, exit non-zero."""
    click.get_current_context().with_resource(interrupts_as_keyboard((signal.SIGTERM,)))
