"""`mnr lr-find`: the learning-rate range test, with the same config options as `mnr train`."""

from __future__ import annotations

import sys

import click

from mnr.cli.base import config_options, main, sigterm_as_ctrl_c


@main.command("lr-find")
@config_options
@click.option(
    "--batch-size",
    type=click.IntRange(min=2),
    default=None,
    help="Batch size (default: the config's).",
)
@click.option(
    "--steps",
    type=click.IntRange(min=2),
    default=200,
    show_default=True,
    help="Mini-batches in the sweep (fewer if the loss diverges first).",
)
@click.option(
    "--start-lr",
    type=click.FloatRange(min=0, min_open=True),
    default=1e-6,
    show_default=True,
    help="Learning rate of the first step.",
)
@click.option(
    "--end-lr",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Learning rate of the last step.",
)
def lr_find_cmd(
    model, config_file, model_module, data, epochs, seed, experiment, overrides, quiet,
    batch_size, steps, start_lr, end_lr,
) -> None:  # fmt: skip
    """Sweep the learning rate over a few hundred mini-batches and suggest one for `mnr train --lr`.

    The loss-vs-lr curve (lr_find.png), its data (lr_find.csv) and the suggestion are logged to
    one MLflow run tagged mnr.role=lr-find. The suggestion is where the smoothed loss falls
    fastest. A sweep counts steps, not epochs: --epochs is refused.
    """
    from mnr import api

    if epochs is not None:
        raise click.UsageError("--epochs does not apply: the sweep runs --steps mini-batches")
    sigterm_as_ctrl_c()
    try:
        result = api.lr_find(
            model=model, config=config_file, model_module=model_module, data=data, seed=seed,
            experiment=experiment, batch_size=batch_size, overrides=overrides, steps=steps,
            start_lr=start_lr, end_lr=end_lr, progress=not quiet,
        )  # fmt: skip
    except KeyboardInterrupt:
        click.echo("mnr: interrupted", err=True)
        sys.exit(130)
    click.echo(
        f"run {result.run_id}: suggested lr {result.suggestion:.3g} "
        f"({len(result.lrs)} steps, {result.seconds:.0f} s); "
        f"try: mnr train --model {result.model_name} --lr {result.suggestion:.3g}"
    )
