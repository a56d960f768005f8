"""The score cache under ``score_table``: rows already scored are read back exactly, only the rest scored."""

from __future__ import annotations

import logging

import pandas as pd
import pytest
import torch
from pandas.testing import assert_frame_equal

from llm_seqrec.data.fingerprint import scorer_fingerprint
from llm_seqrec.evaluation.score_cache import ScoreCache
from llm_seqrec.evaluation.scoring import score_table
from llm_seqrec.models.popularity import Popularity
from llm_seqrec.models.recommender import Queries
from llm_seqrec.models.sasrec import SASRec, SASRecConfig

N_ITEMS = 12


def sequences(n_users: int = 6) -> pd.DataFrame:
    users = list(range(1, n_users + 1))
    return pd.DataFrame({
        "user_idx": users,
        "user_id": [f"u{u}" for u in users],
        "train_items": [[(u + k) % N_ITEMS + 1 for k in range(2 + u % 3)] for u in users],
        "valid_target": [(3 * u) % N_ITEMS + 1 for u in users],
        "test_target": [(5 * u) % N_ITEMS + 1 for u in users],
    })


def candidates(frame: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for split, column in (("valid", "valid_target"), ("test", "test_target")):
        for user, target in zip(frame["user_idx"], frame[column], strict=True):
            rows.append((int(user), split, [int(target), *[(int(target) + k) % N_ITEMS + 1 for k in (1, 4, 7)]]))
    return pd.DataFrame(rows, columns=["user_idx", "split", "candidates"])


class Ranker:
    """A full ranker whose scores follow its weight and each history; it records the users it scored."""

    backbone_dtype = ""

    def __init__(self, weight: float = 1.0) -> None:
        self.weight, self.scored = weight, []

    def fingerprint(self) -> str:
        return scorer_fingerprint("Ranker", weight=self.weight)

    def score_all(self, queries: Queries) -> torch.Tensor:
        self.scored += list(queries.users)
        items = torch.arange(N_ITEMS + 1, dtype=torch.float64)
        return torch.stack([torch.sin(items * self.weight + sum(h)) for h in queries.histories])


class Scorer:
    """A candidate scorer like the LLM ones: each row on its own; it may fail after ``fail_after`` calls."""

    backbone_dtype = "float32"

    def __init__(self, weight: float = 1.0, fail_after: int | None = None) -> None:
        self.weight, self.fail_after, self.calls, self.scored = weight, fail_after, 0, []

    def fingerprint(self) -> str:
        return scorer_fingerprint("Scorer", weight=self.weight)

    def score_candidates(self, queries: Queries, candidates) -> list[list[float]]:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("interrupted")
        self.calls += 1
        self.scored += list(queries.users)
        return [[float(torch.cos(torch.tensor(c * self.weight + len(h)))) for c in items]
                for h, items in zip(queries.histories, candidates, strict=True)]


def test_a_second_scoring_takes_every_row_from_the_cache(tmp_path, caplog):
    frame = sequences()
    model = Ranker()
    plain = score_table(model, frame, candidates(frame), batch_size=4)
    first = score_table(model, frame, candidates(frame), batch_size=4, cache=ScoreCache(tmp_path))
    assert_frame_equal(first, plain)  # nothing cached: exactly the table without a cache
    model.scored.clear()
    with caplog.at_level(logging.INFO, logger="llm_seqrec.evaluation.scoring"):
        second = score_table(model, frame, candidates(frame), batch_size=4, desc="ranker", cache=ScoreCache(tmp_path))
    assert model.scored == []
    assert_frame_equal(second, plain)
    assert "ranker valid: 12 of 12 rows from the score cache" in caplog.text
    assert "ranker test: 12 of 12 rows from the score cache" in caplog.text


@pytest.mark.parametrize("make", [lambda frame: Popularity(frame, N_ITEMS),
                                  lambda frame: SASRec(SASRecConfig(n_items=N_ITEMS, max_len=8, hidden_size=8)).eval()])
def test_real_models_read_back_exactly(tmp_path, make):
    frame = sequences()
    model = make(frame)
    plain = score_table(model, frame, candidates(frame), exclude_seen=True, batch_size=4)
    score_table(model, frame, candidates(frame), exclude_seen=True, batch_size=4, cache=ScoreCache(tmp_path))
    again = score_table(model, frame, candidates(frame), exclude_seen=True, batch_size=4, cache=ScoreCache(tmp_path))
    assert_frame_equal(again, plain)
    # Another exclusion rule is another row: nothing is taken from the rows above.
    other = score_table(model, frame, None, exclude_seen=False, batch_size=4, cache=ScoreCache(tmp_path))
    assert len(ScoreCache(tmp_path)) == len(plain) + len(other)


def test_a_changed_model_rescores_only_its_own_rows(tmp_path):
    frame, cache = sequences(), ScoreCache(tmp_path)
    a, b = Scorer(1.0), Scorer(2.0)
    score_table(a, frame, candidates(frame), cache=cache)
    score_table(b, frame, candidates(frame), cache=cache)
    b_changed = Scorer(2.5)  # the same scorer with new weights
    a.scored.clear()
    table = score_table(b_changed, frame, candidates(frame), cache=ScoreCache(tmp_path))
    assert sorted(b_changed.scored) == sorted(frame["user_idx"].tolist() * 2)
    assert_frame_equal(table, score_table(Scorer(2.5), frame, candidates(frame)))
    score_table(a, frame, candidates(frame), cache=ScoreCache(tmp_path))
    assert a.scored == []  # a's rows are all still there


def test_a_larger_user_sample_scores_only_the_new_users(tmp_path):
    frame = sequences(8)
    ranker = Ranker()
    score_table(ranker, frame, candidates(frame), users=[2, 3, 5], batch_size=3, cache=ScoreCache(tmp_path))
    ranker.scored.clear()
    table = score_table(ranker, frame, candidates(frame), batch_size=3, cache=ScoreCache(tmp_path))
    assert sorted(ranker.scored) == sorted([1, 4, 6, 7, 8] * 2)
    # The same rows in the same order as scoring everyone at once.
    assert_frame_equal(table, score_table(Ranker(), frame, candidates(frame), batch_size=3))


def test_an_interrupted_scoring_keeps_its_finished_batches(tmp_path):
    frame = sequences()
    failing = Scorer(fail_after=3)
    with pytest.raises(RuntimeError, match="interrupted"):
        score_table(failing, frame, candidates(frame), batch_size=2, cache=ScoreCache(tmp_path))
    assert len(ScoreCache(tmp_path)) == 6  # three batches of two rows, all on the valid split
    resumed = Scorer()
    table = score_table(resumed, frame, candidates(frame), batch_size=2, cache=ScoreCache(tmp_path))
    assert len(resumed.scored) == 2 * len(frame) - 6
    assert_frame_equal(table, score_table(Scorer(), frame, candidates(frame), batch_size=2))
