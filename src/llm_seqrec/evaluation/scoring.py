"""Any recommender (``models.recommender``) into a ``<model>_scores`` table, and the one validator.

``score_table`` asks a full ranker for every item's score (full ranking, and the sampled protocol
read from the same scores) or a candidate scorer for its candidates' (sampled protocol only), on both
splits, for every user of ``user_sequences`` or a given subset. Every query passes the leakage check
first. ``validation_metric`` is the same scoring on the ``valid`` split, reduced to the one number
that early stopping reads.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from llm_seqrec.data.leakage import check_inputs_precede_targets
from llm_seqrec.data.schema import SPLITS, split_inputs
from llm_seqrec.evaluation.metrics import metrics_from_ranks
from llm_seqrec.evaluation.protocol import full_ranking_rows, sampled_rows
from llm_seqrec.models.recommender import CandidateScorer, FullRanker, Queries, candidate_scores

Summaries = Mapping[tuple[int, str], str]  # (user_idx, cutoff) -> summary


def queries_at(user_sequences: pd.DataFrame, split: str, summaries: Summaries | None = None, what: str = "queries") -> Queries:
    """``user_sequences``' users at ``split``'s cutoff, in row order, with their summaries there (None
    where a user has none); the inputs pass the leakage check."""
    inputs, _ = split_inputs(user_sequences, split)
    users = [int(u) for u in user_sequences["user_idx"]]
    check_inputs_precede_targets(user_sequences, users, split, inputs, what=f"{what} at {split}")
    texts = tuple(summaries.get((u, split)) for u in users) if summaries is not None else None
    return Queries(tuple(users), split, tuple(tuple(int(i) for i in items) for items in inputs), texts)


def score_table(
    model: FullRanker | CandidateScorer,
    user_sequences: pd.DataFrame,
    eval_candidates: pd.DataFrame | None,
    *,
    exclude_seen: bool = False,
    users: Collection[int] | None = None,
    summaries: Summaries | None = None,
    splits: Sequence[str] = SPLITS,
    batch_size: int | None = None,
    progress: bool = False,
    desc: str = "scoring",
) -> pd.DataFrame:
    """The ``<model>_scores`` table of ``model`` for ``users`` (all when None) on ``splits``.

    A full ranker gets both protocols (sampled only where ``eval_candidates`` is given), a candidate
    scorer the sampled one. The model is called with ``batch_size`` users at a time (all when None);
    a model that batches inside (the LLM models) is best given them all.
    """
    frame = user_sequences if users is None else user_sequences[user_sequences["user_idx"].isin(list(users))]
    frame = frame.reset_index(drop=True)
    full = isinstance(model, FullRanker)
    if not full and not isinstance(model, CandidateScorer):
        raise TypeError(f"{type(model).__name__} is neither a full ranker nor a candidate scorer")
    if not full and eval_candidates is None:
        raise ValueError(f"{type(model).__name__} scores candidates only: score_table needs eval_candidates")
    tables = []
    for split in splits:
        candidates = None
        if eval_candidates is not None:
            candidates = eval_candidates[(eval_candidates["split"] == split) & eval_candidates["user_idx"].isin(frame["user_idx"])]
            candidates = candidates.reset_index(drop=True)
        if full:
            tables += _full_ranker_rows(model, frame, candidates, split, exclude_seen, summaries, batch_size, progress, desc)
        else:
            tables.append(_candidate_rows(model, frame, candidates, split, summaries, batch_size, progress, desc))
    table = pd.concat(tables, ignore_index=True)
    return table.assign(backbone_dtype=model.backbone_dtype) if model.backbone_dtype else table


def validation_metric(
    model: FullRanker | CandidateScorer,
    valid_users: pd.DataFrame,
    eval_candidates: pd.DataFrame | None = None,
    *,
    protocol: str = "full",
    k: int = 10,
    **scoring,
) -> float:
    """NDCG@``k`` of ``valid_users`` at the ``valid`` cutoff under ``protocol``: the early-stopping
    metric of every trainer (``scoring`` as ``score_table``'s keywords)."""
    table = score_table(model, valid_users, eval_candidates if protocol == "sampled" else None, splits=("valid",), **scoring)
    table = table[table["protocol"] == protocol]
    return metrics_from_ranks(table["rank"].to_numpy(), [k], protocol, table["n_ranked"].to_numpy())[f"ndcg@{k}"]


def _chunks(n: int, batch_size: int | None) -> list[range]:
    size = max(1, batch_size or n)
    return [range(start, min(start + size, n)) for start in range(0, n, size)]


def _full_ranker_rows(model, frame, candidates, split, exclude_seen, summaries, batch_size, progress, desc) -> list[pd.DataFrame]:
    queries = queries_at(frame, split, summaries, what=desc)
    chunks = _chunks(len(queries), batch_size)
    row_of = pd.Series(np.arange(len(frame)), index=frame["user_idx"].to_numpy())
    full_tables, scored, chunk_candidates = [], [], []
    for rows in tqdm(chunks, desc=f"{desc} {split}", unit="batch", disable=not progress):
        with torch.no_grad():
            scores = model.score_all(queries.take(rows)).detach().cpu()
        if scores.shape[0] != len(rows):
            raise ValueError(f"{type(model).__name__}.score_all returned {scores.shape[0]} rows for {len(rows)} users")
        part = frame.iloc[rows.start : rows.stop]
        full_tables.append(full_ranking_rows(lambda _inputs, s=scores: s, part, split, exclude_seen, batch_size=len(rows)))
        if candidates is not None:
            mine = candidates[candidates["user_idx"].isin(part["user_idx"])]
            positions = row_of.loc[mine["user_idx"].to_numpy()].to_numpy() - rows.start
            scored += candidate_scores(scores[torch.as_tensor(positions, dtype=torch.long)], mine["candidates"].tolist())
            chunk_candidates.append(mine)
    tables = [pd.concat(full_tables, ignore_index=True)] if full_tables else []
    if candidates is not None:
        tables.append(sampled_rows(scored, pd.concat(chunk_candidates, ignore_index=True) if chunk_candidates else candidates))
    return tables


def _candidate_rows(model, frame, candidates, split, summaries, batch_size, progress, desc) -> pd.DataFrame:
    # Queries in the candidate rows' order, so each user meets its own candidate list.
    by_user = frame.set_index("user_idx").loc[candidates["user_idx"].to_numpy()].reset_index()
    queries = queries_at(by_user, split, summaries, what=desc)
    scored: list = []
    for rows in tqdm(_chunks(len(queries), batch_size), desc=f"{desc} {split}", unit="batch", disable=not progress):
        with torch.no_grad():
            scored += [np.asarray(s, dtype=np.float64) for s in
                       model.score_candidates(queries.take(rows), [candidates["candidates"].iloc[r] for r in rows])]
    return sampled_rows(scored, candidates)
