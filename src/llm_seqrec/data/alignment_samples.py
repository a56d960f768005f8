"""RA-Rec's tailored alignment data: a small, balanced set of (recent history, target) samples.

Candidates are every position of every user's training items (target = the item there, history = the
``history_items`` items before it), so validation and test targets never appear. Then, as in the paper:

- overlap filter: a candidate whose target shares no word with the text of its shown history is
  dropped (words: lower-case letters and digits; words found in more than ``max_word_df`` of all items,
  such as "the" or a field name, do not count, so an overlap means shared content);
- balance: users are put in ``length_buckets`` quantile buckets of their number of training items,
  items in ``popularity_buckets`` quantile buckets of their training interactions, and the budget of
  ``n_samples`` is spread evenly over the (length bucket, popularity bucket) cells; a cell with fewer
  candidates than its share gives all it has and the rest goes evenly to the others. Within a cell,
  users take turns (every chosen user's first sample before anyone's second), so long histories, which
  offer the most positions, do not crowd out short ones.

The bucket counts (candidates and chosen) are logged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

SAMPLE_COLUMNS = ["user_idx", "position", "history", "target", "history_length", "length_bucket", "popularity_bucket"]
_WORD = re.compile(r"[a-z0-9]+")


def item_words(texts: Mapping[int, str], max_word_df: float) -> dict[int, frozenset[str]]:
    """item_idx -> its distinctive words: those found in at most ``max_word_df`` of the items."""
    words = {int(i): frozenset(_WORD.findall(str(t).lower())) for i, t in texts.items()}
    frequency = pd.Series([w for ws in words.values() for w in ws], dtype=object).value_counts()
    common = set(frequency.index[frequency > max_word_df * len(words)])
    return {i: ws - common for i, ws in words.items()}


def shares_a_word(history: list[int], target: int, words: Mapping[int, frozenset[str]]) -> bool:
    target_words = words[target]
    return any(not target_words.isdisjoint(words[i]) for i in history)


def quantile_buckets(values: np.ndarray, n_buckets: int) -> np.ndarray:
    """Bucket 0..n-1 of each value by quantiles; tied values share a bucket, so there may be fewer."""
    values = np.asarray(values)
    if n_buckets == 1 or len(np.unique(values)) == 1:
        return np.zeros(len(values), dtype=np.int64)
    codes = pd.qcut(values, q=n_buckets, labels=False, duplicates="drop")
    # An interpolated edge can fall between two integers and leave a bucket empty: number the rest 0, 1, ...
    return np.unique(codes, return_inverse=True)[1].astype(np.int64)


def even_quotas(available: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """As even a split of ``total`` over cells as ``available`` allows (water-filling); when the rest
    does not divide evenly, random cells get one more."""
    available = np.asarray(available, dtype=np.int64)
    quotas = np.zeros_like(available)
    remaining = int(min(total, available.sum()))
    while remaining > 0:
        open_cells = np.flatnonzero(quotas < available)
        share = remaining // len(open_cells)
        if share == 0:
            quotas[rng.choice(open_cells, size=remaining, replace=False)] += 1
            break
        added = np.minimum(available[open_cells] - quotas[open_cells], share)
        quotas[open_cells] += added
        remaining -= int(added.sum())
    return quotas


def _take_in_turns(users: np.ndarray, quota: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``quota`` entries of ``users``: a random order in which each user's k-th entry comes
    after every user's (k-1)-th."""
    order = rng.permutation(len(users))
    turn = pd.Series(users[order]).groupby(users[order]).cumcount().to_numpy()
    return order[np.argsort(turn, kind="stable")[:quota]]


def build_alignment_samples(
    user_sequences: pd.DataFrame,
    item_catalog: pd.DataFrame,
    n_samples: int,
    history_items: int,
    length_buckets: int,
    popularity_buckets: int,
    overlap_field: str = "title",
    max_word_df: float = 0.05,
    seed: int = 42,
) -> pd.DataFrame:
    """The tailored samples (``SAMPLE_COLUMNS``), sorted by user and position: ``history`` is the shown
    history (the last ``history_items`` items before ``position``), ``history_length`` the user's number
    of training items, and the two buckets those the sample was balanced over."""
    rng = np.random.default_rng(seed)
    words = item_words(dict(zip(item_catalog["item_idx"], item_catalog[overlap_field], strict=True)), max_word_df)
    trains = [np.asarray(t, dtype=np.int64) for t in user_sequences["train_items"]]
    lengths = np.array([len(t) for t in trains], dtype=np.int64)
    user_bucket = quantile_buckets(lengths, length_buckets)

    counts = np.bincount(np.concatenate(trains), minlength=int(item_catalog["item_idx"].max()) + 1)
    items = item_catalog["item_idx"].to_numpy(dtype=np.int64)
    item_bucket = np.zeros(len(counts), dtype=np.int64)
    item_bucket[items] = quantile_buckets(counts[items], popularity_buckets)

    kept = []  # (row, position, target) of the candidates that pass the overlap filter
    for row, train in enumerate(trains):
        items_list = train.tolist()
        for position in range(1, len(items_list)):
            target = items_list[position]
            if shares_a_word(items_list[max(0, position - history_items) : position], target, words):
                kept.append((row, position, target))
    rows, positions, targets = np.asarray(kept, dtype=np.int64).reshape(-1, 3).T
    n_candidates = int(np.maximum(lengths - 1, 0).sum())
    logger.info("Alignment candidates: %d (user, position) pairs, %d share a word with their history (%.1f%%)",
                n_candidates, len(rows), 100 * len(rows) / max(n_candidates, 1))

    n_pop = int(item_bucket.max()) + 1
    cells = user_bucket[rows] * n_pop + item_bucket[targets]
    n_cells = (int(user_bucket.max()) + 1) * n_pop
    available = np.bincount(cells, minlength=n_cells)
    quotas = even_quotas(available, n_samples, rng)
    chosen = np.concatenate([
        np.flatnonzero(cells == c)[_take_in_turns(rows[cells == c], int(q), rng)] for c, q in enumerate(quotas) if q
    ] or [np.zeros(0, dtype=np.int64)])
    _log_buckets(available, quotas, n_pop, lengths, user_bucket, counts[items], item_bucket[items])

    r, p = rows[chosen], positions[chosen]
    samples = pd.DataFrame({
        "user_idx": user_sequences["user_idx"].to_numpy(dtype=np.int64)[r],
        "position": p,
        "history": [trains[u][max(0, q - history_items) : q] for u, q in zip(r, p, strict=True)],
        "target": targets[chosen],
        "history_length": lengths[r],
        "length_bucket": user_bucket[r],
        "popularity_bucket": item_bucket[targets[chosen]],
    }, columns=SAMPLE_COLUMNS)
    return samples.sort_values(["user_idx", "position"], ignore_index=True)


def _log_buckets(available, quotas, n_pop, lengths, user_bucket, popularity, item_bucket) -> None:
    grid = lambda a: pd.DataFrame(a.reshape(-1, n_pop)).rename_axis(index="length", columns="popularity")  # noqa: E731
    spans = lambda v, b: ", ".join(f"{k}: {v[b == k].min()}-{v[b == k].max()}" for k in np.unique(b))  # noqa: E731
    logger.info("History-length buckets (training items): %s", spans(lengths, user_bucket))
    logger.info("Popularity buckets (training interactions): %s", spans(popularity, item_bucket))
    logger.info("Candidates per (length, popularity) bucket:\n%s", grid(available).to_string())
    logger.info("Chosen per (length, popularity) bucket:\n%s", grid(quotas).to_string())
