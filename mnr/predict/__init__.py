"""From a trained model to answers: the predictor, `mnr predict` and `mnr evaluate`.

`Predictor` is the one object that turns images into piano keys. It holds a model rebuilt from a
checkpoint (by name, through the model registry: no pickled instance is ever loaded) and applies
exactly the training preprocessing: `decode_png` at the model's `input_config.input_size`, then
`to_model_input` with its mean and std inside `predict_logits`. The MLflow pyfunc in
`mnr.predict.serving` wraps a `Predictor`; `mnr predict` unwraps it again, so that a folder is decoded in
parallel processes and run through the model in batches rather than one request at a time.

Inputs may be file paths, PNG bytes, base64 strings of PNG bytes (what a served request holds),
or uint8 arrays (H x W x 3 or 3 x H x W, any size; H x W is grayscale), given as a DataFrame
column ``image``, a list, or a stacked N x H x W x 3 / N x 3 x H x W array. Arrays are encoded to
PNG and decoded again when they need resizing, so they are resized by the very same code as
files.

The package holds one idea per module, and this file re-exports the public names of all four:

- `predictor`: `Predictor`, `model_from_checkpoint`, `prediction_frame`, `load_predictor`;
- `inputs`: every accepted input container and image form, coerced to pixels;
- `folder`: `predict_folder` over a folder's images, the submission CSV, the error report;
- `evaluate`: pitch-aware metrics on a labelled folder, printed or logged to MLflow, and the
  top losses (the most confidently wrong images).

Two more modules are imported where they are used, not from here: `logged`, the logged
predictor's format (logging it, finding it on a run, registering it, reading its files back),
and `serving`, the MLflow pyfunc itself, the file that `logged` logs as the model's code.

Example::

    >>> predictor = load_predictor("models:/piano@champion")            # doctest: +SKIP
    >>> predictor.predict(["test/0001.png"], top_k=3)[["label", "note"]]  # doctest: +SKIP
       label note
    0     39   C4
"""

from __future__ import annotations

from mnr.predict.evaluate import (
    Evaluation,
    evaluate_folder,
    format_evaluation,
    labelled_images,
    log_evaluation,
    plot_folder_top_losses,
)
from mnr.predict.folder import (
    FolderPredictions,
    list_images,
    predict_folder,
    predict_model_on_folder,
    write_error_report,
    write_predictions,
)
from mnr.predict.inputs import IMAGE_COLUMN
from mnr.predict.predictor import (
    Predictor,
    load_predictor,
    model_from_checkpoint,
    prediction_frame,
)

__all__ = [
    "IMAGE_COLUMN",
    "Evaluation",
    "FolderPredictions",
    "Predictor",
    "evaluate_folder",
    "format_evaluation",
    "labelled_images",
    "list_images",
    "load_predictor",
    "log_evaluation",
    "model_from_checkpoint",
    "plot_folder_top_losses",
    "prediction_frame",
    "predict_folder",
    "predict_model_on_folder",
    "write_error_report",
    "write_predictions",
]
