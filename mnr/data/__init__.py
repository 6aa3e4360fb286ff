"""Data in the Kaggle layout: reading, validation, decode-once cache, splits, built-in set."""

from __future__ import annotations

from mnr.data.builtin import DataPaths, builtin_dataset, resolve_data
from mnr.data.cache import DecodedImages, load_images
from mnr.data.check import CheckReport, check_folder
from mnr.data.dataset import TrainingData, load_training_data
from mnr.data.folder import TRUTH_FILE, ImageSet, Problem, parse_truth, scan_folder
from mnr.data.images import decode_png, load_png, read_rgb
from mnr.data.split import kfold_indices, stratified_split

__all__ = [
    "TRUTH_FILE",
    "CheckReport",
    "DataPaths",
    "DecodedImages",
    "ImageSet",
    "Problem",
    "TrainingData",
    "builtin_dataset",
    "check_folder",
    "decode_png",
    "load_png",
    "kfold_indices",
    "load_images",
    "load_training_data",
    "parse_truth",
    "read_rgb",
    "resolve_data",
    "scan_folder",
    "stratified_split",
]
