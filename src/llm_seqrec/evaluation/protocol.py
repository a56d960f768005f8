"""The one evaluation protocol: every model's scores become a ``<model>_scores`` table, then metrics.

A model supplies scores; these helpers rank the target, keep the top items, and turn the ranks into
the long-form metrics table. Which users a model is reported on follows one rule: every model is
reported on every evaluated user set that it scored completely (all users, and the seeded LLM user
sample), so an LLM model scored on the sample sits next to popularity and SASRec on the same users.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from llm_seqrec.data.schema import PAD, SCORE_COLUMNS, split_inputs
from llm_seqrec.evaluation.metrics import exclude_items, per_user_metrics, standard_error, target_ranks

TOP_K = 20  # items kept per user in ``top_items`` (full protocol)
# ``backbone_dtype``: the dtype the frozen LLM scored in (a score table's column of that name), empty for
# a model without an LLM; bf16 and float32 rank differently (benchmarks/bench_dtype.py).
# ``std_error``: the standard error of ``value`` over the users (sample sd / sqrt(n_users)); last, so
# readers of the older columns keep working.
METRIC_COLUMNS = ["dataset", "model", "protocol", "split", "metric", "value", "users", "n_users", "backbone_dtype",
                  "std_error"]
ALL_USERS = "all"

ScoreFn = Callable[[list[list[int]]], torch.Tensor]


def llm_user_sample(user_sequences: pd.DataFrame, n: int | None, seed: int) -> np.ndarray:
    """The seeded users that LLM models score (sorted user_idx); all users when ``n`` is None or larger."""
    users = np.sort(user_sequences["user_idx"].to_numpy(dtype=np.int64))
    if n is None or n >= len(users):
        return users
    return np.sort(np.random.default_rng(seed).choice(users, size=n, replace=False))


COLD_ITEMS = "cold_items"  # the ``users`` label of the cold-item slice
COLD_ITEM_MAX_INTERACTIONS = 2


def cold_item_users(user_sequences: pd.DataFrame, split: str = "test",
                    max_interactions: int = COLD_ITEM_MAX_INTERACTIONS) -> np.ndarray:
    """The users (sorted user_idx) whose ``split`` target has at most ``max_interactions`` training interactions
    (occurrences in every user's ``train_items``): the cold-item slice."""
    counts = pd.Series(np.concatenate([np.asarray(s, dtype=np.int64) for s in user_sequences["train_items"]])).value_counts()
    targets = user_sequences[f"{split}_target"].astype(np.int64)
    cold = targets.map(counts).fillna(0).to_numpy() <= max_interactions
    return np.sort(user_sequences["user_idx"].to_numpy(dtype=np.int64)[cold])


def evaluation_user_sets(user_sequences: pd.DataFrame, n: int | None, seed: int) -> dict[str, np.ndarray]:
    """The evaluated user sets: ``all``, plus ``sample<n>`` (the LLM user sample) when it is a strict subset."""
    everyone = np.sort(user_sequences["user_idx"].to_numpy(dtype=np.int64))
    sample = llm_user_sample(user_sequences, n, seed)
    return {ALL_USERS: everyone} if len(sample) == len(everyone) else {ALL_USERS: everyone, f"sample{n}": sample}


def score_frame(
    user_idx: Sequence[int],
    split: str | Sequence[str],
    protocol: str,
    rank: Sequence[float],
    n_ranked: Sequence[int],
    top_items: Sequence[Sequence[int]] | None = None,
    candidate_scores: Sequence[Sequence[float]] | None = None,
) -> pd.DataFrame:
    """A ``<model>_scores`` table (schema.py). List cells are typed numpy arrays, empty where a
    protocol has none, so parquet stores list<int64> and list<double> even when every list is empty."""
    n = len(user_idx)
    no_items, no_scores = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    return pd.DataFrame(
        {
            "user_idx": np.asarray(user_idx, dtype=np.int64),
            "split": [split] * n if isinstance(split, str) else list(split),
            "protocol": [protocol] * n,
            "rank": np.asarray(rank, dtype=np.float64),
            "n_ranked": np.asarray(n_ranked, dtype=np.int64),
            "top_items": (
                [np.asarray(t, dtype=np.int64) for t in top_items] if top_items is not None else [no_items] * n
            ),
            "candidate_scores": (
                [np.asarray(c, dtype=np.float64) for c in candidate_scores]
                if candidate_scores is not None
                else [no_scores] * n
            ),
        },
        columns=SCORE_COLUMNS,
    )


def full_ranking_rows(
    score_fn: ScoreFn,
    user_sequences: pd.DataFrame,
    split: str,
    exclude_seen: bool = False,
    batch_size: int = 256,
) -> pd.DataFrame:
    """Full-ranking score rows for every user of ``user_sequences`` on ``split``.

    ``score_fn`` gets a batch of users' input items (``schema.split_input``: never the target or
    later) and returns scores ``[batch, n_items + 1]``, column = item_idx. Column 0 (padding) is
    never ranked; with ``exclude_seen`` the user's input items are not ranked either (the target
    always is, even when it was seen before).
    """
    inputs, targets = split_inputs(user_sequences, split)
    users = user_sequences["user_idx"].to_numpy(dtype=np.int64)
    ranks, n_ranked, top = [], [], []
    for start in range(0, len(users), batch_size):
        batch_inputs = inputs[start : start + batch_size]
        target = torch.as_tensor(targets[start : start + batch_size], dtype=torch.long)
        with torch.no_grad():
            scores = score_fn(batch_inputs).detach().cpu()
        if scores.shape[0] != len(batch_inputs):
            raise ValueError(f"score_fn returned {scores.shape[0]} rows for {len(batch_inputs)} users")
        # A copy, in floating point: padding and excluded items are overwritten with -inf below.
        scores = scores.to(scores.dtype if scores.is_floating_point() else torch.float64, copy=True)
        n_items = scores.shape[1] - 1
        scores[:, PAD] = float("-inf")
        if exclude_seen:
            excluded = [sorted(set(items) - {t}) for items, t in zip(batch_inputs, target.tolist(), strict=True)]
            scores = exclude_items(scores, excluded, target)
            n_ranked.extend(n_items - len(e) for e in excluded)
        else:
            n_ranked.extend([n_items] * len(batch_inputs))
        ranks.append(target_ranks(scores, target))
        # Excluded items sort last (-inf), so each user's top list stops at the items it ranks.
        best = scores.topk(min(TOP_K, n_items), dim=1).indices.tolist()
        top.extend(items[:count] for items, count in zip(best, n_ranked[-len(best) :], strict=True))
    rank = torch.cat(ranks).numpy() if ranks else np.zeros(0)
    return score_frame(users, split, "full", rank, n_ranked, top_items=top)


def sampled_rows(candidate_scores: Sequence[Sequence[float]], eval_candidates: pd.DataFrame) -> pd.DataFrame:
    """Sampled-protocol score rows: ``candidate_scores[r]`` aligns with ``eval_candidates.candidates[r]``,
    whose first item is the target."""
    if len(candidate_scores) != len(eval_candidates):
        raise ValueError(f"{len(candidate_scores)} score lists for {len(eval_candidates)} candidate rows")
    lengths = [len(c) for c in eval_candidates["candidates"]]
    if [len(s) for s in candidate_scores] != lengths:
        raise ValueError("every score list must have one score per candidate, in the candidates' order")
    if not lengths:
        return score_frame([], [], "sampled", [], [])
    # NaN padding neither beats nor ties the target, so ragged candidate lists rank correctly.
    padded = torch.full((len(lengths), max(lengths)), float("nan"), dtype=torch.float64)
    for row, scores in enumerate(candidate_scores):
        padded[row, : len(scores)] = torch.as_tensor(np.asarray(scores, dtype=np.float64))
    ranks = target_ranks(padded, torch.zeros(len(lengths), dtype=torch.long))
    return score_frame(
        eval_candidates["user_idx"].to_numpy(),
        eval_candidates["split"].tolist(),
        "sampled",
        ranks.numpy(),
        lengths,
        candidate_scores=candidate_scores,
    )


def reported_rows(score_tables: Mapping[str, pd.DataFrame], user_samples: Mapping[str, Collection[int]]):
    """(model, backbone dtype, protocol, split, user set label, its score rows) for every
    named user set in ``user_samples`` that the model scored completely on (protocol, split); a model
    that covers none of them is an error (its numbers would compare with nothing)."""
    for model, table in score_tables.items():
        dtype = ",".join(sorted(set(table["backbone_dtype"]))) if "backbone_dtype" in table.columns else ""
        for (protocol, split), group in table.groupby(["protocol", "split"], sort=True):
            if not group["user_idx"].is_unique:
                raise ValueError(f"{model}_scores has several {protocol}/{split} rows for one user")
            scored = set(group["user_idx"].tolist())
            covered = {label: users for label, users in user_samples.items() if scored.issuperset(users)}
            if not covered:
                raise ValueError(
                    f"{model}_scores ({protocol}/{split}) scores {len(scored)} users, which cover none of the "
                    f"evaluated user sets {sorted(user_samples)}: re-run the stage that makes it"
                )
            for label, users in covered.items():
                yield model, dtype, protocol, split, label, group[group["user_idx"].isin(users)]


def metrics_table(
    score_tables: Mapping[str, pd.DataFrame],
    dataset_name: str,
    ks: Sequence[int],
    user_samples: Mapping[str, Collection[int]],
) -> pd.DataFrame:
    """Long-form metrics: ``dataset,model,protocol,split,metric,value`` then ``users,n_users,backbone_dtype``
    and ``std_error`` (of the mean over the users), on every user set of ``reported_rows``."""
    rows = []
    for model, dtype, protocol, split, label, chosen in reported_rows(score_tables, user_samples):
        values = per_user_metrics(chosen["rank"].to_numpy(), ks, protocol, chosen["n_ranked"].to_numpy())
        rows.extend(
            (dataset_name, model, protocol, split, metric, float(per_user.mean()), label, len(chosen), dtype,
             standard_error(per_user))
            for metric, per_user in values.items()
        )
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def cold_item_metrics(score_tables: Mapping[str, pd.DataFrame], dataset_name: str, ks: Sequence[int],
                      user_sequences: pd.DataFrame) -> pd.DataFrame:
    """The cold-item slice's rows (``users`` = ``cold_items``): full ranking on the test users whose target has
    at most ``COLD_ITEM_MAX_INTERACTIONS`` training interactions, for every model that scored all of them."""
    users = cold_item_users(user_sequences, "test")
    tables = {model: table[(table["protocol"] == "full") & (table["split"] == "test")] for model, table in score_tables.items()}
    tables = {model: table for model, table in tables.items() if set(table["user_idx"].tolist()).issuperset(users.tolist())}
    if not len(users) or not tables:
        return pd.DataFrame(columns=METRIC_COLUMNS)
    return metrics_table(tables, dataset_name, ks, {COLD_ITEMS: users})
