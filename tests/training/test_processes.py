"""``training.processes``: two CPU processes (gloo) sharing each batch train SASRec (real Amazon users) and
a LoRA adapter (the real SmolLM2) to the weights one process reaches with the same global batches, and
only the main process writes checkpoints."""

import os
from dataclasses import replace

import pandas as pd
import pytest
import torch
from conftest import AMAZON, TITLES

import llm_seqrec.training.loop as loop
from llm_seqrec.data.splitting import leave_one_out
from llm_seqrec.llm.backbone import load_backbone
from llm_seqrec.models.llm_recommender import LLMRecommender, LoraSettings, PromptSettings, RecommenderConfig
from llm_seqrec.training import TrainingConfig
from llm_seqrec.training.alignment import shard_histories
from llm_seqrec.training.id_model import SASRecSettings, shard_users, train_sasrec
from llm_seqrec.training.lora import Example, fit_sft
from llm_seqrec.training.processes import split_rows


def amazon_users(n: int) -> tuple[pd.DataFrame, int]:
    raw = pd.read_csv(AMAZON / "interactions.csv")
    raw = raw[raw["user_id"].isin(sorted(raw["user_id"].unique())[:n])].sort_values(["user_id", "timestamp"], kind="stable")
    items = {v: i + 1 for i, v in enumerate(sorted(raw["item_id"].unique()))}
    users = {v: i + 1 for i, v in enumerate(sorted(raw["user_id"].unique()))}
    table = pd.DataFrame({"user_idx": raw["user_id"].map(users).to_numpy(), "user_id": raw["user_id"].astype(str).to_numpy(),
                          "item_idx": raw["item_id"].map(items).to_numpy()})
    return leave_one_out(table), len(items)


@pytest.fixture
def writers(monkeypatch, tmp_path):
    """The pids of the processes that wrote a checkpoint (the patch is inherited by forked processes)."""
    log, save = tmp_path / "writers", loop.save_checkpoint

    def recording(path, payload):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        save(path, payload)

    monkeypatch.setattr(loop, "save_checkpoint", recording)
    return lambda: log.read_text().split() if log.exists() else []


def close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=atol, rtol=0) for k in a)


def without_key_bias(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SASRec's weights but the key part of each attention's qkv bias: a key bias does not change the
    softmax, so its gradient is zero but for rounding, which AdamW normalises into steps of size lr
    that differ with the summation order (measured: 4e-4 apart at lr 2e-3, every other weight within 2e-6)."""
    out = dict(state)
    for name in [k for k in state if k.endswith("attention.qkv.bias")]:
        d = len(state[name]) // 3
        out[name] = torch.cat([state[name][:d], state[name][2 * d:]])
    return out


def test_split_rows_cuts_lists_and_row_tensors_and_weights_the_parts():
    assert split_rows([1, 2, 3], 0, 2) == ([1], 1 / 3) and split_rows([1, 2, 3], 1, 2) == ([2, 3], 2 / 3)
    assert split_rows([1], 0, 2) == (None, 0.0) and split_rows([1], 1, 2) == ([1], 1.0)
    part, weight = split_rows({"a": torch.arange(4), "b": torch.zeros(4, 2)}, 1, 2)
    assert part["a"].tolist() == [2, 3] and part["b"].shape == (2, 2) and weight == 0.5
    with pytest.raises(ValueError, match="different numbers of rows"):
        split_rows({"a": torch.arange(4), "negatives": torch.arange(3)}, 0, 2)
    # SASRec's parts share the sampled negatives, each weighted 1 (its loss is already weighted by positions).
    batch = {"item_seq": torch.arange(6).view(3, 2), "targets": torch.arange(6).view(3, 2), "negatives": torch.arange(5)}
    part, weight = shard_users(batch, 1, 2)
    assert part["item_seq"].tolist() == [[2, 3], [4, 5]] and part["negatives"].tolist() == list(range(5)) and weight == 1.0
    # An alignment batch: the ID positions go with their rows, renumbered.
    batch = {"ids": torch.arange(12).view(3, 4), "last": torch.tensor([3, 2, 3]), "id_rows": torch.tensor([0, 0, 1, 2, 2]),
             "id_cols": torch.tensor([1, 2, 1, 1, 2]), "id_items": torch.tensor([5, 6, 7, 8, 9]), "target": torch.tensor([1, 2, 3])}
    part, weight = shard_histories(batch, 1, 2)
    assert part["id_rows"].tolist() == [0, 1, 1] and part["id_items"].tolist() == [7, 8, 9] and part["target"].tolist() == [2, 3]
    assert part["ids"].tolist() == [[4, 5, 6, 7], [8, 9, 10, 11]] and weight == 2 / 3


def test_two_gloo_processes_train_sasrec_to_the_weights_of_one(tmp_path, writers):
    users, n_items = amazon_users(200)
    training = TrainingConfig(epochs=2, batch_size=48, lr=2e-3, eval_users=40, device="cpu", progress=False,
                              checkpoint_dir=tmp_path / "one")
    settings = SASRecSettings(max_len=20, hidden_size=16, dropout=0.0, training=training)
    _, one = train_sasrec(users, n_items, settings)
    assert writers() == [str(os.getpid())] * 2  # one process: the checkpoints are written here, once per epoch
    two_settings = replace(settings, training=replace(training, processes=2, checkpoint_dir=tmp_path / "two"))
    model, two = train_sasrec(users, n_items, two_settings)
    children = writers()[2:]
    assert len(children) == 2 and len(set(children)) == 1 and children[0] != str(os.getpid())  # the main child only
    assert close(without_key_bias(one.best_state_dict), without_key_bias(two.best_state_dict), atol=1e-5)
    assert close(model.state_dict(), two.best_state_dict, atol=0)  # handed back to the caller's model
    assert [r["loss"] for r in two.history] == pytest.approx([r["loss"] for r in one.history], rel=1e-5)
    assert [r["metric"] for r in two.history] == pytest.approx([r["metric"] for r in one.history], abs=1e-6)
    assert two.best_epoch == one.best_epoch and two.stopped_by == one.stopped_by == "epoch_cap"
    saved = torch.load(tmp_path / "two" / "sasrec.pt", weights_only=True)
    assert saved["epoch"] == 2 and saved["history"][1]["loss"] == pytest.approx(one.history[1]["loss"], rel=1e-5)


def test_two_gloo_processes_fine_tune_a_lora_adapter_to_the_weights_of_one():
    llm = load_backbone(dtype="float32", device="cpu")
    model = LLMRecommender(llm, RecommenderConfig(head="likelihood", backbone=llm.name, lora=LoraSettings(r=2, dropout=0.0),
                                                  prompt=PromptSettings(recent_items=2)), TITLES)
    generator = torch.Generator().manual_seed(0)
    start = {k: torch.randn(v.shape, generator=generator) * 0.02 for k, v in model.adapter_state_dict().items()}
    examples = [Example(1, (1, 2), 3, "Buys lab supplies."), Example(2, (4,), 5), Example(3, (6, 1), 2),
                Example(4, (2, 3), 4), Example(5, (5,), 6)]
    # Batches of 2, 2 and 1 (the last one all in one process), two per step: both the accumulated and the
    # trailing partial step, unequal parts.
    training = TrainingConfig(epochs=2, batch_size=2, grad_accumulation=2, lr=0.01, checkpoint_dir=None, progress=False,
                              device="cpu")
    results = []
    for processes in (1, 2):
        model.load_adapter_state_dict(start)
        model.train()
        results.append(fit_sft(model, examples, TITLES, replace(training, processes=processes), "sft"))
    one, two = results
    trained = model.adapter_state_dict()  # the two-process result, handed back to the model
    assert not close(trained, start, atol=1e-4)  # it trained
    # AdamW normalises each gradient element, so an element whose gradient is near zero takes a step set
    # by rounding (at most lr); the rest agree to float tolerance (measured: 99% within 4e-6, 0.2% over
    # 1e-5, the largest 5e-3), and so do the losses.
    diff = torch.cat([(one.best_state_dict[k] - two.best_state_dict[k]).abs().flatten() for k in one.best_state_dict])
    assert one.best_state_dict.keys() == two.best_state_dict.keys()
    assert float(diff.quantile(0.99)) < 1e-5 and float(diff.max()) < training.lr
    assert [r["loss"] for r in two.history] == pytest.approx([r["loss"] for r in one.history], rel=1e-5)
