"""Any recommender (``models.recommender``) into a ``<model>_scores`` table, and the one validator.

``score_table`` asks a full ranker for every item's score (full ranking, and the sampled protocol
read from the same scores) or a candidate scorer for its candidates' (sampled protocol only), on both
splits, for every user of ``user_sequences`` or a given subset. Every query passes the leakage check
first. With a ``cache`` (``evaluation.score_cache``), rows already scored by the same scorer on the
same inputs are read from it and only the others are scored, in the batches they would be scored in
without it, each finished batch appended to the cache. ``validation_metric`` is the same scoring on
the ``valid`` split, reduced to the one number that early stopping reads; it never uses the cache
(a model in training changes between calls).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from llm_seqrec.data.leakage import check_inputs_precede_targets
from llm_seqrec.data.schema import SPLITS, split_inputs
from llm_seqrec.evaluation.metrics import metrics_from_ranks
from llm_seqrec.evaluation.protocol import full_ranking_rows, sampled_rows
from llm_seqrec.evaluation.score_cache import ScoreCache, merge_rows, row_key
from llm_seqrec.models.recommender import CandidateScorer, FullRanker, Queries, candidate_scores

logger = logging.getLogger(__name__)
Summaries = Mapping[tuple[int, str], str]  # (user_idx, cutoff) -> summary
# Rows per call for a model that scores its rows one by one (the LoRA and zero-shot LLMs, whose results do
# not depend on the grouping): with a cache, an interrupted scoring keeps every finished call's rows.
ROW_CHUNK = 32
OnChunk = Callable[[list[pd.DataFrame]], None] | None  # receives each scored batch's rows


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
    cache: ScoreCache | None = None,
) -> pd.DataFrame:
    """The ``<model>_scores`` table of ``model`` for ``users`` (all when None) on ``splits``.

    A full ranker gets both protocols (sampled only where ``eval_candidates`` is given), a candidate
    scorer the sampled one. The model is called with ``batch_size`` users at a time (all when None);
    a model that batches inside (the LLM models) is best given them all. With ``cache``, each split
    logs how many of its rows came from it.
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
        scoring = (model, split, exclude_seen, summaries, batch_size, progress, desc)
        if cache is None:
            tables += _split_rows(*scoring, frame, candidates)
        else:
            tables += _cached_split_rows(cache, model.fingerprint(), *scoring, frame, candidates)
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


def _split_rows(model, split, exclude_seen, summaries, batch_size, progress, desc, frame, candidates,
                on_chunk: OnChunk = None, queries: Queries | None = None) -> list[pd.DataFrame]:
    """One split's score rows of ``frame``'s users (and ``candidates``' rows), as without a cache; a full
    ranker takes ``queries`` (``frame``'s, already checked) where given."""
    if isinstance(model, FullRanker):
        return _full_ranker_rows(model, frame, candidates, split, exclude_seen, summaries, batch_size, progress, desc, on_chunk,
                                 queries)
    return [_candidate_rows(model, frame, candidates, split, summaries, batch_size, progress, desc, on_chunk)]


def _cached_split_rows(cache: ScoreCache, fingerprint: str, model, split, exclude_seen, summaries, batch_size, progress,
                       desc, frame, candidates) -> list[pd.DataFrame]:
    """One split's rows, those in ``cache`` read from it, the rest scored (a full ranker re-scores a user
    who misses any of its rows) and appended batch by batch; in the order scoring all would give."""
    full = isinstance(model, FullRanker)
    queries = queries_at(frame, split, summaries, what=desc)
    position = {user: row for row, user in enumerate(queries.users)}
    if candidates is not None and not candidates["user_idx"].is_unique:
        logger.warning("%s %s: several candidate lists for one user, scored without the score cache", desc, split)
        return _split_rows(model, split, exclude_seen, summaries, batch_size, progress, desc, frame, candidates)
    key_of = {}
    if full:
        targets = split_inputs(frame, split)[1]
        for row, user in enumerate(queries.users):
            scope = [int(targets[row]), bool(exclude_seen)]
            key_of[user, "full"] = row_key(fingerprint, split, "full", user, queries.histories[row], queries.summary(row), scope)
    listed = candidates if candidates is not None else pd.DataFrame({"user_idx": [], "candidates": []})
    for user, items in zip(listed["user_idx"], listed["candidates"], strict=True):
        row = position[int(user)]
        key_of[int(user), "sampled"] = row_key(fingerprint, split, "sampled", user, queries.histories[row], queries.summary(row),
                                               [int(i) for i in items])
    known = cache.rows(fingerprint)
    missing = {user for (user, _), key in key_of.items() if key not in known.index}
    n_cached = sum(key in known.index for key in key_of.values())
    logger.info("%s %s: %d of %d rows from the score cache", desc, split, n_cached, len(key_of))

    def keyed(tables: list[pd.DataFrame]) -> list[pd.DataFrame]:
        return [t.assign(key=[key_of[int(u), p] for u, p in zip(t["user_idx"], t["protocol"], strict=True)]) for t in tables]

    def append(tables: list[pd.DataFrame]) -> None:
        cache.append(pd.concat(keyed(tables), ignore_index=True).assign(fingerprint=fingerprint))

    todo_rows = [row for row, user in enumerate(queries.users) if user in missing]
    todo_frame = frame.iloc[todo_rows].reset_index(drop=True) if full else frame
    todo_candidates = candidates[candidates["user_idx"].isin(missing)].reset_index(drop=True) if candidates is not None else None
    scored = []
    if missing:
        scored = _split_rows(model, split, exclude_seen, summaries, batch_size, progress, desc, todo_frame, todo_candidates,
                             on_chunk=append, queries=queries.take(todo_rows) if full else None)
        if n_cached == 0:
            return scored  # nothing was cached: the tables as scoring without a cache makes them
    tables = []
    if full:
        tables.append(merge_rows(known, keyed(scored), [key_of[user, "full"] for user in queries.users]))
    if candidates is not None:
        # A full ranker's sampled rows come batch by batch (of ``batch_size`` users), each batch in candidate order.
        size = max(1, batch_size or len(frame)) if full else len(candidates) or 1
        users = [int(u) for u in candidates["user_idx"]]
        order = sorted(range(len(users)), key=lambda r: position[users[r]] // size if full else 0)
        tables.append(merge_rows(known, keyed(scored), [key_of[users[r], "sampled"] for r in order]))
    return tables


def _full_ranker_rows(model, frame, candidates, split, exclude_seen, summaries, batch_size, progress, desc,
                      on_chunk: OnChunk = None, queries: Queries | None = None) -> list[pd.DataFrame]:
    queries = queries if queries is not None else queries_at(frame, split, summaries, what=desc)
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
        chunk = [full_tables[-1]]
        if candidates is not None:
            mine = candidates[candidates["user_idx"].isin(part["user_idx"])]
            positions = row_of.loc[mine["user_idx"].to_numpy()].to_numpy() - rows.start
            mine_scores = candidate_scores(scores[torch.as_tensor(positions, dtype=torch.long)], mine["candidates"].tolist())
            scored += mine_scores
            chunk_candidates.append(mine)
            chunk.append(sampled_rows(mine_scores, mine))
        if on_chunk is not None:
            on_chunk(chunk)
    tables = [pd.concat(full_tables, ignore_index=True)] if full_tables else []
    if candidates is not None:
        tables.append(sampled_rows(scored, pd.concat(chunk_candidates, ignore_index=True) if chunk_candidates else candidates))
    return tables


def _candidate_rows(model, frame, candidates, split, summaries, batch_size, progress, desc, on_chunk: OnChunk = None) -> pd.DataFrame:
    # Queries in the candidate rows' order, so each user meets its own candidate list.
    by_user = frame.set_index("user_idx").loc[candidates["user_idx"].to_numpy()].reset_index()
    queries = queries_at(by_user, split, summaries, what=desc)
    scored: list = []
    for rows in tqdm(_chunks(len(queries), batch_size), desc=f"{desc} {split}", unit="batch", disable=not progress):
        with torch.no_grad():
            mine = [np.asarray(s, dtype=np.float64) for s in
                    model.score_candidates(queries.take(rows), [candidates["candidates"].iloc[r] for r in rows])]
        scored += mine
        if on_chunk is not None:
            on_chunk([sampled_rows(mine, candidates.iloc[rows.start : rows.stop])])
    return sampled_rows(scored, candidates)
