"""The LoRA LLM recommender on the real SmolLM2 backbone, with tiny prompts: its heads against naive
full forwards, its adapter as a PEFT folder, and its candidate scoring (its training procedures:
tests/training/test_lora.py)."""

import pandas as pd
import pytest
import torch
from conftest import TITLES, recommender
from kedro.io.core import Version

from llm_seqrec.datasets import PeftAdapterDataset
from llm_seqrec.llm.backbone import load_backbone
from llm_seqrec.evaluation.scoring import score_table
from llm_seqrec.models.llm_recommender import LLMRecommender
from llm_seqrec.models.recommender import CandidateScorer, Queries





@pytest.fixture(scope="module")
def yes_no():
    return recommender("yes_no", recent_items=2, summary_tokens=8)


@pytest.fixture(scope="module")
def likelihood():
    return recommender("likelihood", recent_items=2)


def last_logits(model: LLMRecommender, prompt: list[int], continuation: list[int]) -> torch.Tensor:
    """Naive: one full forward of prompt + continuation, the whole vocabulary at every position."""
    return model.lm(input_ids=torch.tensor([prompt + continuation])).logits[0].float()


def test_yes_no_head_is_the_two_way_softmax_at_the_answer_position(yes_no):
    prompt = yes_no.prompt_ids([TITLES[1], TITLES[2]], "Buys lab supplies.")
    candidates = [yes_no.candidate_ids(TITLES[i]) for i in (3, 5, 6)]
    assert len({len(c) for c in candidates}) > 1  # right padding is exercised
    with torch.no_grad():
        log_odds = yes_no(prompt, candidates)
        scores = yes_no.scores(prompt, candidates)
        expected = []
        for c in candidates:
            logits = last_logits(yes_no, prompt, c)[-1]
            expected.append(torch.softmax(logits[yes_no.answer_ids], dim=0)[0])
    torch.testing.assert_close(torch.sigmoid(log_odds), torch.stack(expected), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(scores, torch.stack(expected).double(), atol=1e-5, rtol=1e-4)
    assert yes_no.tokenizer.decode(yes_no.answer_ids) == "YesNo"


def test_likelihood_head_sums_the_answer_tokens_only(likelihood):
    prompt = likelihood.prompt_ids([TITLES[1], TITLES[2]])
    answers = [likelihood.candidate_ids(TITLES[i]) for i in (3, 5)]
    with torch.no_grad():
        logprob = likelihood(prompt, answers)
        alone = likelihood(prompt, answers[:1])  # no padding from a longer neighbour
        expected = []
        for answer in answers:
            logp = torch.log_softmax(last_logits(likelihood, prompt, answer), dim=-1)
            positions = torch.arange(len(prompt) - 1, len(prompt) + len(answer) - 1)
            expected.append(logp[positions, torch.tensor(answer)].sum())
        scores = likelihood.scores(prompt, answers)
    torch.testing.assert_close(logprob, torch.stack(expected), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(alone, logprob[:1], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(scores, logprob.double() / torch.tensor([len(a) for a in answers]), atol=1e-4, rtol=1e-5)


def test_prompts_show_the_recent_items_and_the_summary_only_where_asked(yes_no, likelihood):
    tokenizer = yes_no.tokenizer
    text = tokenizer.decode(yes_no.prompt_ids([TITLES[1], TITLES[2], TITLES[3]], "one two three four five six seven eight nine ten"))
    assert TITLES[1] not in text and f"1. {TITLES[2]}\n2. {TITLES[3]}" in text  # recent_items = 2
    assert "one two" in text and "ten" not in text  # cut to summary_tokens = 8
    assert text.endswith("Candidate item:\n")
    assert tokenizer.decode(yes_no.candidate_ids("Beaker set")).endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert "summary" not in tokenizer.decode(yes_no.prompt_ids([TITLES[1]], None))
    no_summary = recommender("yes_no", use_summary=False)
    assert "summary" not in tokenizer.decode(no_summary.prompt_ids([TITLES[1]], "a summary"))
    answer_text = tokenizer.decode(likelihood.prompt_ids([TITLES[1]], "Buys lab supplies."))
    assert "Buys lab supplies." in answer_text and answer_text.endswith("<|im_start|>assistant\n")
    assert likelihood.candidate_ids(TITLES[3]) == tokenizer(TITLES[3], add_special_tokens=False)["input_ids"]


def test_only_the_adapter_trains_and_is_saved(yes_no):
    state = yes_no.adapter_state_dict()
    assert state and all("lora_" in k for k in state)
    # r = 2 on q, k, v, o of 30 layers: A is r x in, B is out x r (SmolLM2: 576 hidden, 192 for k and v).
    assert sum(v.numel() for v in state.values()) == 30 * 2 * (2 * (576 + 576) + 2 * (576 + 192))
    trainable = sum(p.numel() for p in yes_no.parameters() if p.requires_grad)
    assert trainable == sum(v.numel() for v in state.values())
    with pytest.raises(KeyError, match="missing"):
        yes_no.load_adapter_state_dict({k: v for k, v in list(state.items())[1:]})


def test_the_adapter_saves_reloads_and_scores_identically(tmp_path, yes_no):
    from peft import PeftModel

    prompt = yes_no.prompt_ids([TITLES[1], TITLES[2]], "Buys lab supplies.")
    candidates = [yes_no.candidate_ids(TITLES[i]) for i in (3, 4, 5)]
    before = yes_no.scores(prompt, candidates)

    dataset = PeftAdapterDataset(filepath=str(tmp_path / "adapter"), version=Version(None, None))
    dataset.save(yes_no.to_artifact())
    folders = list((tmp_path / "adapter").iterdir())
    assert len(folders) == 1  # one version
    saved = folders[0] / "adapter"
    assert {p.name for p in saved.iterdir()} == {"adapter_config.json", "adapter_model.safetensors", "recommender.json"}

    reloaded = LLMRecommender.from_artifact(dataset.load(), load_backbone(dtype="float32", device="cpu"))
    assert reloaded.config == yes_no.config
    torch.testing.assert_close(reloaded.scores(prompt, candidates), before, atol=0, rtol=0)

    # The folder is a plain PEFT adapter too.
    peft_model = PeftModel.from_pretrained(load_backbone(dtype="float32", device="cpu").model, saved).eval()
    with torch.no_grad():
        logits = peft_model(input_ids=torch.tensor([prompt + candidates[0]])).logits[0, -1]
    torch.testing.assert_close(torch.softmax(logits[yes_no.answer_ids], 0)[0].double(), before[0], atol=1e-5, rtol=1e-4)


def test_score_candidates_follow_the_split_inputs(likelihood):
    assert isinstance(likelihood, CandidateScorer)
    sequences = pd.DataFrame({"user_idx": [7], "train_items": [[1, 2]], "valid_target": [3], "test_target": [4]})
    rows = pd.DataFrame({"user_idx": [7, 7], "split": ["valid", "test"], "candidates": [[3, 5], [4, 6, 1]]})
    summaries = {(7, "test"): "Buys lab supplies."}
    table = score_table(likelihood, sequences, rows, summaries=summaries)
    assert table["split"].tolist() == ["valid", "test"] and [len(s) for s in table["candidate_scores"]] == [2, 3]
    # test: the last two inputs are item 2 and the validation target 3, with the test-cutoff summary.
    prompt = likelihood.prompt_ids([TITLES[2], TITLES[3]], "Buys lab supplies.")
    expected = likelihood.scores(prompt, [likelihood.candidate_ids(TITLES[i]) for i in (4, 6, 1)])
    torch.testing.assert_close(torch.tensor(table["candidate_scores"].iloc[1], dtype=torch.float64), expected, atol=0, rtol=0)
    # Queries as score_table builds them: the model reads the history and summary of each row.
    direct = likelihood.score_candidates(Queries((7,), "test", ((1, 2, 3),), ("Buys lab supplies.",)), [[4, 6, 1]])
    torch.testing.assert_close(torch.tensor(direct[0], dtype=torch.float64), expected, atol=0, rtol=0)
