import math

import numpy as np
import pytest
import torch

from llm_seqrec.evaluation.metrics import exclude_items, metrics_from_ranks, target_ranks


def test_ties_count_half():
    scores = torch.tensor([[0.1, 0.5, 0.5, 0.5, 0.9], [1.0, 1.0, 1.0, 1.0, 1.0]])
    ranks = target_ranks(scores, torch.tensor([1, 4]))
    # Row 0: one item above, two others tied -> 1 + 2/2. Row 1: four others tied -> 4/2.
    assert ranks.tolist() == [2.0, 2.0]


def test_full_metrics_by_hand():
    ranks = np.array([0.0, 2.0, 7.0])
    got = metrics_from_ranks(ranks, [1, 5], "full")
    assert got["hr@1"] == pytest.approx(1 / 3)
    assert got["hr@5"] == pytest.approx(2 / 3)
    assert got["ndcg@1"] == pytest.approx(1 / 3)
    assert got["ndcg@5"] == pytest.approx((1 + 1 / math.log2(4)) / 3)
    assert got["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 8) / 3)
    assert set(got) == {"hr@1", "ndcg@1", "hr@5", "ndcg@5", "mrr"}


def test_sampled_metrics_and_auc_by_hand():
    # 1 target + 4 negatives: best, worst, and one negative above plus one tied (1 + 1/2).
    ranks = np.array([0.0, 4.0, 1.5])
    got = metrics_from_ranks(ranks, [10], "sampled", n_ranked=np.array([5, 5, 5]))
    assert set(got) == {"hr@1", "ndcg@5", "mrr", "auc"}
    assert got["hr@1"] == pytest.approx(1 / 3)
    assert got["auc"] == pytest.approx((1.0 + 0.0 + (1 - 1.5 / 4)) / 3)
    assert got["ndcg@5"] == pytest.approx((1 + 1 / math.log2(6) + 1 / math.log2(3.5)) / 3)
    assert got["mrr"] == pytest.approx((1 + 1 / 5 + 1 / 2.5) / 3)


def test_all_equal_scores_give_chance_auc():
    scores = torch.zeros(3, 21)
    ranks = target_ranks(scores, torch.zeros(3, dtype=torch.long)).numpy()
    assert metrics_from_ranks(ranks, [1], "sampled", n_ranked=np.full(3, 21))["auc"] == pytest.approx(0.5)


def test_exclude_items_keeps_the_target():
    scores = torch.tensor([[0.0, 5.0, 4.0, 3.0, 1.0]])
    out = exclude_items(scores.clone(), [[1, 2, 3]], keep=torch.tensor([2]))
    assert out[0, 1] == float("-inf") and out[0, 3] == float("-inf")
    assert out[0, 2] == 4.0
    assert target_ranks(out, torch.tensor([2])).item() == 0.0
