"""The tables every stage exchanges, and the one place that says what a split's input is.

``interactions`` (02_intermediate), one row per kept interaction, in time order per user:
    user_idx int64 (1..U), item_idx int64 (1..I; 0 is padding), timestamp float64,
    user_id str, item_id str (the raw ids)
``item_catalog`` (03_primary), one row per item, sorted by item_idx:
    item_idx int64, item_id str, title str, text str (title plus the configured fields)
``user_sequences`` (03_primary), one row per user, sorted by user_idx:
    user_idx int64, user_id str, train_items list[int64] (all but the last two, in order),
    valid_target int64 (second to last), test_target int64 (last)
``eval_candidates`` (05_model_input), one row per (user, split):
    user_idx int64, split str ('valid'|'test'), candidates list[int64] (the target first, then
    n_negatives seeded items the user never interacted with)
``<model>_scores`` (07_model_output), one row per (user, split, protocol):
    user_idx, split, protocol ('full'|'sampled'), rank float64 (0-based rank of the target, ties
    counted half), n_ranked int64, top_items list[int64] (full: the model's top 20),
    candidate_scores list[float64] (sampled: scores aligned with eval_candidates.candidates)
    and, for a model that runs the frozen LLM, backbone_dtype str (the dtype it scored in)
``<model>_training_log`` (08_reporting), one row per training epoch (``training.training_log``):
    model, stage (successive fits of one model), epoch, loss, metric (validation, None where not run),
    seconds, trainable_parameters, peak_rss_mb, peak_cuda_mb, stopped_by (last epoch of a fit), backbone_dtype
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

SPLITS = ("valid", "test")
PROTOCOLS = ("full", "sampled")
PAD = 0

INTERACTION_COLUMNS = ["user_idx", "item_idx", "timestamp", "user_id", "item_id"]
ITEM_COLUMNS = ["item_idx", "item_id", "title", "text"]
SEQUENCE_COLUMNS = ["user_idx", "user_id", "train_items", "valid_target", "test_target"]
CANDIDATE_COLUMNS = ["user_idx", "split", "candidates"]
SCORE_COLUMNS = ["user_idx", "split", "protocol", "rank", "n_ranked", "top_items", "candidate_scores"]
# One row per epoch end (epoch_end true) and per validation inside an epoch (false: loss is the epoch's
# mean so far; seconds, memory and stopped_by empty); examples_seen: the fit's training examples so far.
TRAINING_LOG_COLUMNS = ["model", "stage", "epoch", "loss", "metric", "seconds",
                        "trainable_parameters", "peak_rss_mb", "peak_cuda_mb", "stopped_by", "backbone_dtype",
                        "examples_seen", "epoch_end"]


def split_input(train_items: Sequence[int], valid_target: int, split: str) -> list[int]:
    """The items a model may see when predicting ``split``'s target: never the target or later."""
    if split == "valid":
        return list(train_items)
    if split == "test":
        return [*train_items, int(valid_target)]
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def split_inputs(user_sequences: pd.DataFrame, split: str) -> tuple[list[list[int]], list[int]]:
    """Every user's input items and target for ``split``, in ``user_sequences`` row order."""
    inputs = [
        split_input(train, valid, split)
        for train, valid in zip(user_sequences["train_items"], user_sequences["valid_target"], strict=True)
    ]
    targets = user_sequences[f"{split}_target"].astype(int).tolist()
    return inputs, targets
