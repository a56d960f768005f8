"""Bi-Tuning's training procedures (no Kedro): the two-stage schedule, resuming, preference tuning."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from llm_seqrec.models.bituning import BiTuning, BiTuningConfig
from llm_seqrec.models.bituning_prompts import BiTuningRanker, score_candidates, score_users
from llm_seqrec.models.mformer import MFormerConfig
from llm_seqrec.models.recommender import FullRanker, Queries
from llm_seqrec.models.sasrec import SASRec, SASRecConfig
from llm_seqrec.training.bituning import BiTuningPreferenceConfig, fit_preference, fit_stages, preference_candidates
from llm_seqrec.training.bituning_data import UserSet
from llm_seqrec.training.config import TrainingConfig

N_ITEMS = 10


class TinyPrompts:
    """The prompts of ``user_set``'s users: three token ids from their last three items."""

    def users(self, queries: Queries, use_summary: bool) -> list[list[int]]:
        return [[2 + h[-3], 3 + h[-2], 4 + h[-1]] for h in queries.histories]


def tiny_laser() -> BiTuningRanker:
    torch.manual_seed(0)  # as the node seeds before building: the same start, so checkpoints match
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128))
    config = BiTuningConfig(
        n_items=N_ITEMS, llm_hidden_size=32, backbone="tiny", rec_size=8,
        mformer=MFormerConfig(id_size=16, output_size=32, hidden_size=16, n_experts=2, n_query_tokens=2, num_heads=2),
    )
    items = [[]] + [[1 + i, 20 + i, 40 + i] for i in range(N_ITEMS)]
    net = BiTuning(config, llm.eval().requires_grad_(False), items,
                   SASRec(SASRecConfig(n_items=N_ITEMS, max_len=6, hidden_size=16)))
    return BiTuningRanker(net, TinyPrompts(), use_summary=False, backbone_dtype="float32", batch_size=16)


def user_set(n: int) -> UserSet:
    rng = np.random.default_rng(0)
    histories = [rng.integers(1, N_ITEMS + 1, size=3).tolist() for _ in range(n)]
    frame = pd.DataFrame({
        "user_idx": np.arange(1, n + 1, dtype=np.int64), "user_id": [str(u) for u in range(n)],
        "train_items": histories, "valid_target": rng.integers(1, N_ITEMS + 1, size=n),
        "test_target": rng.integers(1, N_ITEMS + 1, size=n),
    })
    prompts = [[2 + h[0], 3 + h[1], 4 + h[2]] for h in histories]
    return UserSet(frame, prompts, histories, frame["valid_target"].astype(int).tolist())


def schedule(tmp_path: Path | None = None) -> dict:
    training = TrainingConfig(epochs=3, batch_size=2, eval_users=None, progress=False, device="cpu",
                              checkpoint_dir=tmp_path)
    return {"training": training, "stage1_epochs": 1, "train_users": None, "exclude_seen": False}


def test_the_ranker_is_a_full_ranker_scoring_the_queries_prompts():
    ranker = tiny_laser()
    ranker.net.eval()  # the M-Former's dropout off, as when validating and scoring
    users = user_set(4)
    queries = Queries(tuple(range(4)), "valid", tuple(map(tuple, users.histories)))
    assert isinstance(ranker, FullRanker)
    scores = ranker.score_all(queries)
    assert scores.shape == (4, N_ITEMS + 1) and torch.isinf(scores[:, 0]).all()
    assert torch.equal(scores, score_users(ranker.net, users.prompts, users.histories, 16))


def test_stage2_reuses_the_cached_item_encodings(monkeypatch):
    ranker = tiny_laser()
    net = ranker.net
    calls = {1: 0, 2: 0}
    original = net.encode_items

    def counting(ids):
        calls[1 if net.item_suffix.requires_grad else 2] += 1
        return original(ids)

    monkeypatch.setattr(net, "encode_items", counting)
    log = fit_stages(ranker, "laser", user_set(6), user_set(4), None, **schedule())

    assert log["stage"].tolist() == [1, 2, 2] and log["epoch"].tolist() == [1, 1, 2]
    assert log["metric"].notna().all()
    assert calls[1] > 0  # stage 1: catalogue passes and the batches' targets
    # Stage 2 starts from the encodings stage 1's last validation made with the same weights, and
    # never re-encodes: the item side is frozen.
    assert calls[2] == 0
    assert not net.item_suffix.requires_grad


@pytest.mark.parametrize("negatives", [None, 4])
def test_stage1_negatives_go_to_stage_1_batches_only_seeded(monkeypatch, negatives):
    seen = []

    def run() -> pd.DataFrame:
        ranker = tiny_laser()
        original = ranker.net.loss

        def loss(**batch):
            seen.append((bool(ranker.net.item_suffix.requires_grad), batch.get("negatives")))
            return original(**batch)

        monkeypatch.setattr(ranker.net, "loss", loss)
        return fit_stages(ranker, "laser", user_set(6), user_set(4), None, **schedule(), stage1_negatives=negatives)

    log = run()
    stage1 = [n for trainable, n in seen if trainable]
    stage2 = [n for trainable, n in seen if not trainable]
    assert stage1 and stage2 and all(n is None for n in stage2)
    if negatives is None:
        assert all(n is None for n in stage1)  # the default: no negatives drawn, the loss over every item
    else:
        assert all(n.shape == (negatives,) and 1 <= n.min() and n.max() <= N_ITEMS for n in stage1)
        first = [n.clone() for _, n in seen if n is not None]
        seen.clear()
        pd.testing.assert_frame_equal(run().drop(columns=["seconds", "peak_rss_mb"]),
                                      log.drop(columns=["seconds", "peak_rss_mb"]))
        assert all(torch.equal(a, b) for a, b in zip(first, [n for _, n in seen if n is not None], strict=True))


def test_a_finished_schedule_resumes_from_its_checkpoints_without_training(tmp_path, monkeypatch):
    first = tiny_laser()
    log = fit_stages(first, "laser", user_set(6), user_set(4), None, **schedule(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["laser_stage1.pt", "laser_stage2.pt"]

    again = tiny_laser()
    monkeypatch.setattr(again.net, "loss", lambda **_: pytest.fail("a finished run trained again"))
    # The checkpoints hold the history, its seconds and memory included.
    pd.testing.assert_frame_equal(fit_stages(again, "laser", user_set(6), user_set(4), None, **schedule(tmp_path)), log)
    for key, value in first.net.state_dict().items():
        assert torch.equal(again.net.state_dict()[key], value)


def test_preference_candidates_are_the_target_then_items_the_user_never_touched():
    users = user_set(6)
    candidates = preference_candidates(users, N_ITEMS, 3, seed=1)
    assert candidates.shape == (6, 4)
    assert candidates[:, 0].tolist() == users.targets
    for row, (_, user) in zip(candidates.tolist(), users.frame.iterrows(), strict=True):
        touched = {*user["train_items"], user["valid_target"], user["test_target"]}
        assert len(set(row[1:])) == 3 and not set(row[1:]) & touched
    assert torch.equal(preference_candidates(users, N_ITEMS, 3, seed=1), candidates)


def test_preference_tuning_trains_the_user_side_against_a_fixed_reference_and_resumes(tmp_path, monkeypatch):
    ranker = tiny_laser()
    net = ranker.net
    fit_stages(ranker, "fusion", user_set(6), user_set(4), None, **schedule())
    start = {k: v.clone() for k, v in net.state_dict().items()}
    preference = BiTuningPreferenceConfig(train_users=None, training=TrainingConfig(
        epochs=2, batch_size=2, lr=0.01, progress=False, device="cpu", checkpoint_dir=tmp_path))
    references = []
    original = BiTuning.preference_loss

    def recording(self, prompt, length, candidates, reference, *args, **kwargs):
        references.append(reference.clone())
        return original(self, prompt, length, candidates, reference, *args, **kwargs)

    monkeypatch.setattr(BiTuning, "preference_loss", recording)
    log = fit_preference(ranker, "fusion_dmpo", user_set(6), user_set(4), None, preference, exclude_seen=False)

    assert log["stage"].tolist() == [3, 3] and log["epoch"].tolist() == [1, 2] and log["metric"].notna().all()
    assert {k for k, v in net.state_dict().items() if not torch.equal(v, start[k])} >= {"user_suffix"}
    for key in ("item_suffix", "item_projection.weight"):
        assert torch.equal(net.state_dict()[key], start[key])
    # The reference is the starting model's logits, the same tensor rows in every epoch.
    tuned_state = {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(start)
    net.eval()
    users = user_set(6)
    expected = score_candidates(net, users.prompts, users.histories, preference_candidates(users, N_ITEMS, 3, 42), 8)
    seen = torch.cat(references)
    assert len(seen) == 2 * 6 and all(any(torch.equal(row, e) for e in expected) for row in seen)

    # A finished run resumes from its checkpoint without a step.
    monkeypatch.setattr(BiTuning, "preference_loss", lambda *a, **k: pytest.fail("a finished run trained again"))
    again = fit_preference(replace(ranker), "fusion_dmpo", user_set(6), user_set(4), None, preference, exclude_seen=False)
    pd.testing.assert_frame_equal(again, log)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in tuned_state.items())
