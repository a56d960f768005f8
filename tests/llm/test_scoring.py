"""The shared-prefix scorer against the naive computation, on the real SmolLM2 backbone (tiny prompts)."""

import pandas as pd
import pytest
import torch

from llm_seqrec.llm.backbone import load_backbone
from llm_seqrec.llm.prompts import chat_prompt_ids, item_titles, recent_items_message, text_ids, truncate
from llm_seqrec.evaluation.scoring import score_table
from llm_seqrec.llm.scoring import next_token_logits, score_continuations
from llm_seqrec.models.zeroshot import ZeroShotLLM

TITLES = ["Toy Story (1995)", "Heat (1995)", "The Shawshank Redemption (1994)", "X"]


@pytest.fixture(scope="module")
def backbone():
    return load_backbone(dtype="float32", device="cpu")


def naive_logprobs(model, prompt: list[int], continuations: list[list[int]]) -> torch.Tensor:
    """One full forward per prompt + continuation, vocabulary logits at every position."""
    out = []
    for ids in continuations:
        logits = model(input_ids=torch.tensor([prompt + ids])).logits[0].float()
        logprob = torch.log_softmax(logits, dim=-1)
        positions = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(ids))
        out.append(logprob[positions, torch.tensor(ids)].sum())
    return torch.stack(out)


def tiny_prompt(tokenizer) -> list[int]:
    return chat_prompt_ids(tokenizer, recent_items_message(["Jumanji (1995)", "Heat (1995)"]))


def test_shared_prefix_equals_naive(backbone):
    prompt = tiny_prompt(backbone.tokenizer)
    continuations = [text_ids(backbone.tokenizer, t) for t in TITLES]
    assert len({len(c) for c in continuations}) > 2 and min(len(c) for c in continuations) == 1
    with torch.no_grad():
        shared = score_continuations(backbone.model, prompt, continuations)
        naive = naive_logprobs(backbone.model, prompt, continuations)
        single = score_continuations(backbone.model, prompt, continuations[:1])
    torch.testing.assert_close(shared.logprob, naive, atol=1e-4, rtol=1e-5)
    assert shared.n_tokens.tolist() == [len(c) for c in continuations]
    torch.testing.assert_close(shared.mean(), naive / shared.n_tokens, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(single.logprob, naive[:1], atol=1e-4, rtol=1e-5)


def test_prompt_as_embeddings_equals_prompt_as_ids(backbone):
    prompt = tiny_prompt(backbone.tokenizer)
    continuations = [text_ids(backbone.tokenizer, t) for t in TITLES[:2]]
    embeddings = backbone.model.get_input_embeddings()(torch.tensor(prompt))
    with torch.no_grad():
        by_ids = score_continuations(backbone.model, prompt, continuations)
        by_embeddings = score_continuations(backbone.model, embeddings, continuations)
    torch.testing.assert_close(by_embeddings.logprob, by_ids.logprob, atol=1e-4, rtol=1e-5)


def test_gradients_through_a_lora_model_equal_naive_gradients():
    from peft import LoraConfig, get_peft_model

    llm = load_backbone(dtype="float32", device="cpu")  # its own copy: PEFT edits the model in place
    torch.manual_seed(0)
    config = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)  # random B: not a no-op
    model = get_peft_model(llm.model, config)
    prompt = tiny_prompt(llm.tokenizer)[-12:]
    continuations = [text_ids(llm.tokenizer, t) for t in TITLES[:3]]
    weights = torch.tensor([1.0, -0.5, 0.25])

    def grads(logprob: torch.Tensor) -> dict[str, torch.Tensor]:
        model.zero_grad()
        (weights * logprob).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    shared = score_continuations(model, prompt, continuations)
    shared_grads = grads(shared.logprob)
    naive = naive_logprobs(model, prompt, continuations)
    naive_grads = grads(naive)
    torch.testing.assert_close(shared.logprob.detach(), naive.detach(), atol=1e-4, rtol=1e-5)
    assert shared_grads and set(shared_grads) == set(naive_grads)
    for name, grad in shared_grads.items():
        assert grad.abs().sum() > 0, name
        # float32 sums in a different order differ by ~1e-4 in single elements; compare the tensor as a whole
        relative_error = (grad - naive_grads[name]).norm() / naive_grads[name].norm()
        assert relative_error < 1e-4, (name, relative_error.item())


def test_next_token_logits_multiply_only_the_asked_rows(backbone):
    prompt = tiny_prompt(backbone.tokenizer)
    continuations = [text_ids(backbone.tokenizer, t) for t in TITLES[:3]]
    assert len({len(c) for c in continuations}) > 1  # right padding is exercised
    with torch.no_grad():
        some = next_token_logits(backbone.model, prompt, continuations, [10, 20, 30])
        for row, ids in enumerate(continuations):
            full = backbone.model(input_ids=torch.tensor([prompt + ids])).logits[0, -1].float()
            torch.testing.assert_close(some[row], full[[10, 20, 30]], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="non-empty prompt"):
        next_token_logits(backbone.model, [], continuations, [10])


def test_zeroshot_scores_follow_the_split_inputs(backbone):
    catalog = pd.DataFrame(
        {"item_idx": [1, 2, 3, 4, 5], "item_id": list("abcde"), "title": TITLES + ["Casino (1995) " * 20]}
    )
    catalog["text"] = catalog["title"]
    sequences = pd.DataFrame(
        {"user_idx": [7], "user_id": ["u"], "train_items": [[1, 2]], "valid_target": [3], "test_target": [5]}
    )
    candidates = pd.DataFrame({"user_idx": [7, 7], "split": ["test", "valid"], "candidates": [[5, 1], [3, 4, 2]]})
    titles = item_titles(catalog, 40)
    model = ZeroShotLLM(backbone, titles, recent_items=2, length_normalize=True)
    table = score_table(model, sequences, candidates)
    assert table["split"].tolist() == ["valid", "test"] and [len(s) for s in table["candidate_scores"]] == [3, 2]
    assert set(table["backbone_dtype"]) == {backbone.dtype_name}
    assert len(titles[5]) <= 40
    # test split: the last 2 input items are item 2 and the validation target, item 3.
    prompt = chat_prompt_ids(backbone.tokenizer, recent_items_message([titles[2], titles[3]]))
    with torch.no_grad():
        continuations = [text_ids(backbone.tokenizer, titles[i]) for i in (5, 1)]
        expected = score_continuations(backbone.model, prompt, continuations).mean().double()
    torch.testing.assert_close(torch.tensor(table["candidate_scores"].iloc[1], dtype=torch.float64), expected, atol=1e-5, rtol=1e-5)


def test_prompt_ids_end_where_the_answer_starts(backbone):
    tokenizer = backbone.tokenizer
    ids = chat_prompt_ids(tokenizer, recent_items_message(["A", "B"]))
    text = tokenizer.decode(ids)
    assert text.count(tokenizer.bos_token) == text.count("<|im_start|>") == 3  # system, user, assistant
    assert text.endswith("<|im_start|>assistant\n")
    assert "1. A\n2. B" in text


def test_truncate():
    assert truncate("short title", 50) == "short title"
    assert truncate("a  title\nwith   spaces", 50) == "a title with spaces"
    cut = truncate("The Lord of the Rings: The Fellowship of the Ring", 20)
    assert len(cut) <= 20 and "The Lord of the Rings".startswith(cut)
