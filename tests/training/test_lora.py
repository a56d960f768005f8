"""The LoRA recommender's training procedures (training.lora, training.preference) on the real SmolLM2
backbone with tiny prompts, Kedro-free: examples and users, the yes/no, SFT and preference fits, the
cached reference, the validator."""

import pandas as pd
import pytest
import torch
from conftest import TITLES, recommender

from llm_seqrec.data.fingerprint import weights_fingerprint
from llm_seqrec.evaluation.scoring import validation_metric
from llm_seqrec.training import TrainingConfig
from llm_seqrec.training.lora import (
    Example,
    fit_sft,
    fit_yes_no,
    sampled_validator,
    train_cutoff_examples,
    training_users,
    validation_users,
)
from llm_seqrec.training.preference import (
    fit_preference,
    read_reference,
    reference_logprobs,
    reference_table,
    table_examples,
)

EXAMPLES = [Example(1, (1, 2), 3, "Buys lab supplies.", (5, 6)), Example(2, (4,), 5, None, (1, 2))]


def tiny_training(**changes) -> TrainingConfig:
    return TrainingConfig(**{"epochs": 1, "batch_size": 2, "lr": 0.01, "checkpoint_dir": None, "progress": False, **changes})




def test_training_users_are_nested_and_summarised_first():
    sequences = pd.DataFrame({"user_idx": range(1, 11), "train_items": [[1, 2]] * 9 + [[1]]})
    users = training_users(sequences, [3, 7], None, seed=1)
    assert set(users[:2]) == {3, 7} and len(users) == 9 and 10 not in users  # user 10 has no training target
    assert training_users(sequences, [3, 7], 5, seed=1) == users[:5]
    examples = train_cutoff_examples(pd.DataFrame({"user_idx": [4], "train_items": [[5, 6, 7]]}), [4], {4: "s"})
    assert examples == [Example(4, (5, 6), 7, "s")]


def test_validation_users_are_a_seeded_subset_of_the_llm_sample():
    sequences = pd.DataFrame({"user_idx": range(1, 21), "train_items": [[1, 2]] * 20})
    candidates = pd.DataFrame({"user_idx": [*range(1, 21)] * 2, "split": ["valid"] * 20 + ["test"] * 20,
                               "candidates": [[1, 2]] * 40})
    everyone = validation_users(sequences, candidates, None, 42, None, 0)
    assert everyone == list(range(1, 21))
    some = validation_users(sequences, candidates, 10, 42, 4, 0)
    assert len(some) == 4 and some == sorted(some) and set(some) <= set(validation_users(sequences, candidates, 10, 42, None, 0))
    assert some == validation_users(sequences, candidates, 10, 42, 4, 0)


def test_the_validator_is_sampled_ndcg5_of_the_validation_users():
    model = recommender("likelihood", recent_items=2)
    sequences = pd.DataFrame({"user_idx": [7, 8], "train_items": [[1, 2], [3, 4]], "valid_target": [3, 5], "test_target": [4, 6]})
    candidates = pd.DataFrame({"user_idx": [7, 8, 7, 8], "split": ["valid", "valid", "test", "test"],
                               "candidates": [[3, 5, 6], [5, 1, 2], [4, 1, 2], [6, 1, 2]]})
    value = sampled_validator(sequences, candidates, [8], {})(model)
    assert value == validation_metric(model, sequences[sequences["user_idx"] == 8], candidates, protocol="sampled", k=5)
    assert 0 < value <= 1


def test_yes_no_and_sft_training_move_the_adapter():
    model = recommender("yes_no")
    start = {k: v.clone() for k, v in model.adapter_state_dict().items()}
    result = fit_yes_no(model, EXAMPLES, TITLES, n_items=6, negatives=1, training=tiny_training(), name="t")
    assert len(result.history) == 1 and torch.isfinite(torch.tensor(result.history[0]["loss"]))
    assert any(not torch.equal(start[k], v) for k, v in model.adapter_state_dict().items())

    model = recommender("likelihood")
    before = model(model.prompt_ids([TITLES[1], TITLES[2]]), [model.candidate_ids(TITLES[3])]).item()
    fit_sft(model, EXAMPLES, TITLES, tiny_training(epochs=3), name="s")
    with torch.no_grad():
        after = model(model.prompt_ids([TITLES[1], TITLES[2]]), [model.candidate_ids(TITLES[3])]).item()
    assert after > before  # the answer became likelier


def test_the_reference_never_changes_during_preference_training():
    model = recommender("likelihood", recent_items=2)
    sft_state = {k: v.clone() for k, v in model.adapter_state_dict().items()}
    reference = reference_logprobs(model, EXAMPLES, TITLES)
    cached = reference.clone()
    assert reference.shape == (2, 3) and not reference.requires_grad
    result = fit_preference(model, EXAMPLES, TITLES, reference, "dmpo", beta=1.0, sft_weight=0.1,
                            training=tiny_training(epochs=2), name="p")
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in result.history)
    assert torch.equal(reference, cached)  # the cache is read, never written
    policy = reference_logprobs(model, EXAMPLES, TITLES)
    assert not torch.allclose(policy, cached)  # while the policy moved
    assert weights_fingerprint(model.adapter_state_dict()) != weights_fingerprint(sft_state)
    model.load_adapter_state_dict(sft_state)  # the SFT state gives back exactly the cached reference
    torch.testing.assert_close(reference_logprobs(model, EXAMPLES, TITLES), cached, atol=0, rtol=0)
    with pytest.raises(ValueError, match="do not match"):
        fit_preference(model, EXAMPLES, TITLES, reference[:1], "sdpo", 1.0, 0.0, tiny_training(), "p")


def test_the_reference_table_round_trips_and_names_its_adapter():
    reference = torch.tensor([[-1.5, -2.25, -3.0], [-0.5, -4.0, -2.0]])
    table = reference_table(EXAMPLES, reference, "abc")
    assert table["items"].tolist() == [[3, 5, 6], [5, 1, 2]]
    torch.testing.assert_close(read_reference(table, EXAMPLES, "abc"), reference, atol=0, rtol=0)
    with pytest.raises(ValueError, match="re-run the node dmpo.compute_reference_logprobs"):
        read_reference(table, EXAMPLES, "another adapter")
    examples = pd.DataFrame({"user_idx": [1, 2], "history": [[1, 2], [4]], "target": [3, 5],
                             "negatives": [[5, 6], [1, 2]], "summary": ["Buys lab supplies.", None]})
    assert table_examples(examples, 2) == EXAMPLES and table_examples(examples, 1) == EXAMPLES[:1]
