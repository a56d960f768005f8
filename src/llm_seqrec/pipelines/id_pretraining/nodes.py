"""id_pretraining nodes: train SASRec on item IDs, then export what later stages read from it."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from llm_seqrec.data.schema import SPLITS, split_inputs
from llm_seqrec.evaluation.metrics import metrics_from_ranks
from llm_seqrec.evaluation.protocol import full_ranking_rows, sampled_rows
from llm_seqrec.llm.device import choose_device
from llm_seqrec.models.sasrec import PAD, SASRec, SASRecConfig, left_pad, length_bucketed_batches
from llm_seqrec.params import EvaluationParams, SASRecParams
from llm_seqrec.training import fit, seed_everything, training_log


def train_sasrec(
    user_sequences: pd.DataFrame, item_catalog: pd.DataFrame, sasrec: dict, evaluation: dict
) -> tuple[dict, pd.DataFrame]:
    """Train on every user's training items (next item at each position); stop early on validation
    NDCG@10 over a seeded sample of users. Returns the model artifact and the per-epoch log."""
    params = SASRecParams.model_validate(sasrec)
    exclude_seen = EvaluationParams.model_validate(evaluation).exclude_seen
    training = params.training
    seed_everything(training.seed)
    config = SASRecConfig(
        n_items=int(item_catalog["item_idx"].max()),
        max_len=params.max_len,
        hidden_size=params.hidden_size,
        num_blocks=params.num_blocks,
        num_heads=params.num_heads,
        dropout=params.dropout,
        attention_dropout=params.attention_dropout,
    )
    model = SASRec(config)

    sequences = [s for s in user_sequences["train_items"] if len(s) > 1]
    inputs = left_pad([s[:-1] for s in sequences], params.max_len)
    targets = left_pad([s[1:] for s in sequences], params.max_len)
    lengths = (inputs != PAD).sum(1)
    # Each batch's mean loss is weighted by its share of the epoch's target positions, so that an epoch
    # optimises the mean over every position however the batches group them (length buckets do not
    # up-weight the positions of short histories).
    positions_per_batch = float(lengths.sum()) / math.ceil(len(inputs) / training.batch_size)
    n_negatives = params.n_sampled_negatives if params.loss == "sampled_softmax" else None

    def make_batches(epoch: int, generator: torch.Generator) -> Iterator[dict]:
        for rows in length_bucketed_batches(lengths, training.batch_size, params.bucket_window, generator):
            width = int(lengths[rows].max())
            batch = {"item_seq": inputs[rows, -width:], "targets": targets[rows, -width:]}
            if n_negatives is not None:
                batch["negatives"] = torch.randint(1, config.n_items + 1, (n_negatives,), generator=generator)
            yield batch

    valid = user_sequences
    if training.eval_users is not None and training.eval_users < len(user_sequences):
        sample = np.random.default_rng(training.seed).choice(len(user_sequences), training.eval_users, replace=False)
        valid = user_sequences.iloc[np.sort(sample)]

    def validate(model: SASRec) -> float:
        device = next(model.parameters()).device
        rows = full_ranking_rows(
            lambda inputs: model.score_items(model.user_state(left_pad(inputs, params.max_len).to(device))),
            valid, "valid", exclude_seen, training.batch_size,
        )
        return metrics_from_ranks(rows["rank"].to_numpy(), [10], "full")["ndcg@10"]

    fingerprint = hashlib.sha256()
    for part in (inputs.numpy(), targets.numpy(), valid["user_idx"].to_numpy(), valid["valid_target"].to_numpy()):
        fingerprint.update(part.tobytes())
    run_config = {
        "model": config.to_dict(),
        "loss": params.loss,
        "n_sampled_negatives": n_negatives,
        "bucket_window": params.bucket_window,
        "exclude_seen": exclude_seen,
        "data": fingerprint.hexdigest(),
    }
    def loss_fn(model: SASRec, batch: dict) -> torch.Tensor:
        return model.loss(**batch) * ((batch["targets"] != PAD).sum() / positions_per_batch)

    result = fit(model, loss_fn, make_batches, validate, training, "sasrec", run_config)
    return model.to_artifact(), training_log("sasrec", result.history)


def extract_item_embeddings(sasrec_model: dict) -> pd.DataFrame:
    """The item ID embedding table (items 1..I), which later stages align into the LLM."""
    table = sasrec_model["state_dict"]["item_embedding.weight"][1:].float().numpy()
    return pd.DataFrame({"item_idx": np.arange(1, len(table) + 1, dtype=np.int64), "embedding": list(table)})


def compute_user_states(sasrec_model: dict, user_sequences: pd.DataFrame, sasrec: dict) -> pd.DataFrame:
    """Each user's state after the last input item of each split (valid: train items; test: + valid target)."""
    training = SASRecParams.model_validate(sasrec).training
    model = SASRec.from_artifact(sasrec_model).to(choose_device(training.device)).eval()
    frames = []
    for split in SPLITS:
        inputs, _ = split_inputs(user_sequences, split)
        states = _user_states(model, inputs, training.batch_size).numpy()
        frames.append(pd.DataFrame({"user_idx": user_sequences["user_idx"].to_numpy(), "split": split, "state": list(states)}))
    return pd.concat(frames, ignore_index=True)


def score_sasrec(
    sasrec_model: dict,
    id_user_states: pd.DataFrame,
    user_sequences: pd.DataFrame,
    eval_candidates: pd.DataFrame,
    sasrec: dict,
    evaluation: dict,
) -> pd.DataFrame:
    """The score table for both splits: full ranking over all items for every user, and sampled
    ranking of each user's ``eval_candidates``; scores are the users' states against the item table."""
    batch_size = SASRecParams.model_validate(sasrec).training.batch_size
    exclude_seen = EvaluationParams.model_validate(evaluation).exclude_seen
    model = SASRec.from_artifact(sasrec_model).eval()
    max_len = model.config.max_len
    frames = []
    for split in SPLITS:
        states = id_user_states[id_user_states["split"] == split].set_index("user_idx")["state"]
        # A state is a function of the input's last max_len items, so the ranking looks it up by them.
        inputs, _ = split_inputs(user_sequences, split)
        by_input = {
            tuple(items[-max_len:]): state
            for items, state in zip(inputs, states.loc[user_sequences["user_idx"].to_numpy()], strict=True)
        }

        def score_fn(batch: list[list[int]]) -> torch.Tensor:
            return model.score_items(_stack([by_input[tuple(items[-max_len:])] for items in batch]))

        frames.append(full_ranking_rows(score_fn, user_sequences, split, exclude_seen, batch_size))
        candidates = eval_candidates[eval_candidates["split"] == split]
        scores = []
        with torch.no_grad():
            for start in range(0, len(candidates), batch_size):
                rows = candidates.iloc[start : start + batch_size]
                item_scores = model.score_items(_stack(states.loc[rows["user_idx"].to_numpy()]))
                # torch.tensor copies: the candidate arrays read from parquet are read-only.
                scores.extend(item_scores[r, torch.tensor(c)].double().numpy() for r, c in enumerate(rows["candidates"]))
        frames.append(sampled_rows(scores, candidates))
    return pd.concat(frames, ignore_index=True)


def _user_states(model: SASRec, sequences: Sequence[Sequence[int]], batch_size: int) -> torch.Tensor:
    """Last-position states ``[N, d]`` (CPU) of ``sequences``, cut to the model's ``max_len``."""
    device = next(model.parameters()).device
    with torch.no_grad():
        return torch.cat([
            model.user_state(left_pad(sequences[i : i + batch_size], model.config.max_len).to(device)).cpu()
            for i in range(0, len(sequences), batch_size)
        ])


def _stack(states) -> torch.Tensor:
    return torch.from_numpy(np.stack(list(states)).astype(np.float32))
