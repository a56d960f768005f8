"""Several prompts in one forward (``LLMRecommender.prompt_batch``, ``grouped_forward``) against one prompt
at a time, in float32 on the real SmolLM2 backbone and real rows of the shared Amazon set whose prompts
differ in length (some with a summary): the scores of both heads, and a training loss and its gradient.

Padding changes only the order of float sums. Bounds: 1e-4 per score, 1e-5 on the loss, a relative 1e-4
on the adapter's gradient (float32 sums in another order differ by ~1e-4 in single elements, so the
gradient is compared as a whole, as in test_scoring.py). benchmarks/bench_lora.py measured at most
6.6e-06 between batched and one-at-a-time p(Yes) on 16 Amazon rows of 21 candidates at full depth.
A batch of 1 is exactly a lone forward per prompt (today's path).
"""

import numpy as np
import pandas as pd
import pytest
import torch

from llm_seqrec.llm.backbone import load_backbone
from llm_seqrec.llm.prompts import item_titles
from llm_seqrec.models.llm_recommender import LLMRecommender, LoraSettings, PromptBatch, PromptSettings, RecommenderConfig
from llm_seqrec.models.losses import yes_no_bce
from llm_seqrec.models.recommender import Queries

USERS, CANDIDATES = 6, 6
SUMMARIES = ["Buys lab glassware and safety gear for a school chemistry lab.", None, "Electronics hobbyist.",
             None, None, "Prefers budget tools; often buys replacement parts and consumables in bulk."]


@pytest.fixture(scope="module")
def amazon(amazon_dir):
    """Item titles (80 characters) and the first users' histories and candidates (their last item and
    seeded others), as ids."""
    interactions = pd.read_csv(amazon_dir / "interactions.csv")
    items = pd.read_csv(amazon_dir / "items.csv")
    index = {item: i for i, item in enumerate(items["item_id"], start=1)}
    titles = item_titles(pd.DataFrame({"item_idx": range(1, len(items) + 1), "title": items["title"].astype(str)}), 80)
    rng = np.random.default_rng(0)
    histories, candidates = [], []
    for user in sorted(interactions["user_id"].unique())[:USERS]:
        history = [index[i] for i in interactions[interactions["user_id"] == user].sort_values("timestamp")["item_id"]]
        others = np.setdiff1d(np.arange(1, len(items) + 1), history)
        histories.append(tuple(history[:-1]))
        candidates.append([history[-1], *(int(i) for i in rng.choice(others, CANDIDATES - 1, replace=False))])
    return titles, Queries(tuple(range(USERS)), "test", tuple(histories), tuple(SUMMARIES)), candidates


def model(head: str, titles) -> LLMRecommender:
    """A recommender with a random non-zero adapter and no dropout (dropout draws differ between groupings)."""
    llm = load_backbone(dtype="float32", device="cpu")
    config = RecommenderConfig(head=head, backbone=llm.name, lora=LoraSettings(r=2, dropout=0.0),
                               prompt=PromptSettings(recent_items=3))
    out = LLMRecommender(llm, config, titles)
    generator = torch.Generator().manual_seed(0)
    out.load_adapter_state_dict({k: torch.randn(v.shape, generator=generator) * 0.02 for k, v in out.adapter_state_dict().items()})
    return out.eval()


@pytest.mark.parametrize("head", ["yes_no", "likelihood"])
def test_batched_scores_equal_one_prompt_at_a_time(amazon, head):
    titles, queries, candidates = amazon
    recommender = model(head, titles)
    prompts = [recommender.prompt_ids([titles[i] for i in h], s) for h, s in zip(queries.histories, queries.summaries)]
    assert len({len(p) for p in prompts}) == USERS and max(map(len, prompts)) - min(map(len, prompts)) > 20
    recommender.prompt_batch = PromptBatch(train=1, score=1)
    single = recommender.score_candidates(queries, candidates)
    # prompt_batch 1 is a lone forward per prompt, bit for bit
    alone = recommender.scores(prompts[0], [recommender.candidate_ids(titles[c]) for c in candidates[0]])
    assert single[0] == alone.tolist()
    fingerprint = recommender.fingerprint()
    for batch in (4, USERS):  # groups of 4 and 2 (sorted by length), then all in one
        recommender.prompt_batch = PromptBatch(train=1, score=batch)
        batched = recommender.score_candidates(queries, candidates)
        assert np.abs(np.array(batched) - np.array(single)).max() < 1e-4
        assert recommender.fingerprint() == fingerprint  # a pure batch-size change keeps the score cache's rows


def test_batched_training_loss_and_gradient_equal_one_prompt_at_a_time(amazon):
    titles, queries, candidates = amazon
    recommender = model("yes_no", titles)
    prompts = [recommender.prompt_ids([titles[i] for i in h], s) for h, s in zip(queries.histories, queries.summaries)]
    pairs = [[recommender.candidate_ids(titles[c]) for c in row[:2]] for row in candidates[:4]]  # positive, negative
    labels = torch.tensor([1.0, 0.0] * 4)

    def loss_and_grads(batch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        recommender.zero_grad()
        loss = yes_no_bce(torch.cat(recommender.grouped_forward(prompts[:4], pairs, batch)), labels)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in recommender.named_parameters() if p.requires_grad}

    loss, grads = loss_and_grads(1)
    batched_loss, batched_grads = loss_and_grads(4)
    assert abs(batched_loss - loss) < 1e-5
    assert grads and set(grads) == set(batched_grads)
    total = torch.cat([g.flatten() for g in grads.values()])
    assert total.abs().sum() > 0
    difference = torch.cat([(batched_grads[n] - g).flatten() for n, g in grads.items()])
    assert difference.norm() / total.norm() < 1e-4
