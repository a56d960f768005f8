"""Bi-Tuning: what trains, what stays frozen, the item cache, padding, prompts and adapter round trips.

Most tests use a tiny random Llama (same code path as SmolLM2, milliseconds per step); the last ones
run the real backbone to check the prompts and that no vocabulary logits are ever computed.
"""

import math

import pytest
import torch
from kedro.io.core import Version
from transformers import LlamaConfig, LlamaForCausalLM

from llm_seqrec.datasets import TorchWeightsDataset
from llm_seqrec.data.padding import right_pad
from llm_seqrec.models.bituning import BiTuning, BiTuningConfig
from llm_seqrec.models.bituning_prompts import PromptConfig, Prompts, collate_users, score_candidates, score_users
from llm_seqrec.models.losses import dmpo_loss, sdpo_loss
from llm_seqrec.models.mformer import MFormerConfig
from llm_seqrec.models.sasrec import SASRec, SASRecConfig

N_ITEMS, ID_LEN = 12, 8
USERS = [[5, 6, 7], [8, 9, 10, 11, 12], [13, 14], [15, 16, 17, 18]]  # prompt token ids
HISTORIES = [[1, 2, 3], [4, 5], [6], [7, 8, 9, 10]]
TARGETS = torch.tensor([3, 7, 7, 12])


def tiny_llm() -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(config).eval().requires_grad_(False)


def item_prompts() -> list[list[int]]:
    generator = torch.Generator().manual_seed(1)
    return [[]] + [torch.randint(1, 64, (2 + i % 4,), generator=generator).tolist() for i in range(N_ITEMS)]


def build(prefix: bool = True, n_experts: int = 3) -> BiTuning:
    mformer = (
        MFormerConfig(id_size=16, output_size=32, hidden_size=16, n_experts=n_experts, n_query_tokens=4, num_heads=2,
                      dropout=0.0)
        if prefix else None
    )
    config = BiTuningConfig(n_items=N_ITEMS, llm_hidden_size=32, backbone="tiny", rec_size=8, n_suffix_tokens=2,
                            mformer=mformer)
    id_model = SASRec(SASRecConfig(n_items=N_ITEMS, max_len=ID_LEN, hidden_size=16)) if prefix else None
    return BiTuning(config, tiny_llm(), item_prompts(), id_model)


def batch(rows=range(len(USERS))) -> dict:
    rows = list(rows)
    out = collate_users([USERS[r] for r in rows], [HISTORIES[r] for r in rows], ID_LEN)
    out["target"] = TARGETS[rows]
    return out


def frozen_state(net: BiTuning) -> dict[str, torch.Tensor]:
    return {
        **{f"llm.{k}": v.clone() for k, v in net.frozen.llm.state_dict().items()},
        **{f"id.{k}": v.clone() for k, v in net.frozen.id_model.state_dict().items()},
    }


def test_only_the_trainable_parts_are_registered_and_saved():
    net = build()
    names = set(net.state_dict())
    assert names == {n for n, _ in net.named_parameters()}
    assert {n.split(".")[0] for n in names} == {"mformer", "user_suffix", "item_suffix", "user_projection", "item_projection"}
    assert net.n_trainable_parameters() < sum(p.numel() for p in net.frozen.llm.parameters())
    # The ID model stays in eval mode (no dropout) whatever mode the trainable module is in.
    net.train()
    assert not net.frozen.id_model.training and not net.frozen.llm.training


@pytest.mark.parametrize("stage", [1, 2])
def test_a_training_step_changes_only_the_trainable_parts(stage):
    net = build()
    net.set_item_side_trainable(stage == 1)
    before_frozen = frozen_state(net)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=0.01)
    net.train()
    net.loss(**batch()).backward()
    optimizer.step()

    after_frozen = frozen_state(net)
    assert all(torch.equal(before_frozen[k], after_frozen[k]) for k in before_frozen)
    assert all(p.grad is None for p in net.frozen.llm.parameters())
    assert all(p.grad is None for p in net.frozen.id_model.parameters())
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    item_side = {"item_suffix", "item_projection.weight", "item_projection.bias"}
    user_side = set(before) - item_side
    # Every user-side tensor learns (the router and the chosen experts' queries included) ...
    assert changed >= user_side - {"mformer.queries"} and "mformer.queries" in changed
    # ... and the item side only in stage 1.
    assert (changed & item_side == item_side) if stage == 1 else not (changed & item_side)


def test_stage1_reencodes_the_targets_and_stage2_only_reads_the_cache(monkeypatch):
    net = build()
    table = net.refresh_items()
    calls = []
    original = net.encode_items
    monkeypatch.setattr(net, "encode_items", lambda ids: calls.append(ids.tolist()) or original(ids))

    net.set_item_side_trainable(True)
    net.loss(**batch()).backward()
    assert calls == [sorted(set(TARGETS.tolist()))]  # the batch's targets, with gradients

    calls.clear()
    net.set_item_side_trainable(False)
    for _ in range(3):
        net.loss(**batch()).backward()
        assert net.refresh_items() is table  # the item side did not change: no re-encoding
    assert calls == []


def test_sampled_negatives_encode_every_column_fresh_and_push_the_items_apart(monkeypatch):
    net = build()
    net.set_item_side_trainable(True)
    net.refresh_items()
    calls = []
    original = net.encode_items
    monkeypatch.setattr(net, "encode_items", lambda ids: calls.append(ids.tolist()) or original(ids))
    negatives = torch.tensor([1, 7, 9])  # 7 is also a target: one column
    loss = net.loss(**batch(), negatives=negatives)
    columns = sorted({*TARGETS.tolist(), *negatives.tolist()})
    assert calls == [columns]  # one fresh encoding of the targets and the negatives, no cached column
    # The cross-entropy of each user's target among exactly those columns (plus the balance term).
    users = net.encode_users(**{k: v for k, v in batch().items() if k != "target"})
    logits = users.vectors @ original(torch.tensor(columns)).T / net.config.temperature
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([columns.index(t) for t in TARGETS.tolist()]))
    torch.testing.assert_close(loss, expected + net.config.balance_weight * users.balance_loss)
    # A column that is only a negative (item 1) gets a gradient too: the item side is pushed apart.
    encoded = []

    def keep(ids):
        encoded.append(original(ids))
        encoded[-1].retain_grad()
        return encoded[-1]

    monkeypatch.setattr(net, "encode_items", keep)
    net.loss(**batch(), negatives=negatives).backward()
    assert encoded[0].grad[columns.index(1)].abs().sum() > 0


def test_refresh_reencodes_after_the_item_side_changed():
    net = build(prefix=False)
    first = net.refresh_items()
    assert net.refresh_items() is first
    with torch.no_grad():
        net.item_suffix.add_(0.1)
    second = net.refresh_items()
    assert second is not first and not torch.equal(second, first)
    assert torch.equal(second[0], torch.zeros(8))  # padding row
    torch.testing.assert_close(second[1:].norm(dim=-1), torch.ones(N_ITEMS))


def test_scores_do_not_depend_on_padding_or_batch_composition():
    net = build().eval()
    alone = torch.cat([score_users(net, [USERS[i]], [HISTORIES[i]], batch_size=1) for i in range(len(USERS))])
    together = score_users(net, USERS, HISTORIES, batch_size=4)
    torch.testing.assert_close(alone[:, 1:], together[:, 1:], atol=1e-5, rtol=1e-5)
    assert torch.isinf(together[:, 0]).all()
    # Items encoded together or alone agree too.
    ids = torch.arange(1, N_ITEMS + 1)
    torch.testing.assert_close(net.encode_items(ids), torch.cat([net.encode_items(i.view(1)) for i in ids]), atol=1e-5, rtol=1e-5)


def test_the_user_state_is_the_plain_decoder_state_at_the_last_suffix_token():
    net = build(prefix=False).eval()
    tokens, lengths = right_pad(USERS[:2])
    llm = net.frozen.llm
    with torch.no_grad():
        got = net._llm_state(tokens, lengths, None, net.user_suffix)
        for row, ids in enumerate(USERS[:2]):
            x = torch.cat([llm.get_input_embeddings()(torch.tensor([ids])), net.user_suffix.unsqueeze(0)], dim=1)
            expected = llm.model(inputs_embeds=x).last_hidden_state[0, -1]
            torch.testing.assert_close(got[row], expected, atol=1e-5, rtol=1e-5)


def test_adapter_save_and_load_give_identical_scores(tmp_path):
    net = build()
    optimizer = torch.optim.AdamW(net.parameters(), lr=0.01)
    net.loss(**batch()).backward()
    optimizer.step()
    net.eval()
    scores = score_users(net, USERS, HISTORIES, batch_size=2)

    dataset = TorchWeightsDataset(filepath=str(tmp_path / "adapter"), version=Version(None, None))
    dataset.save(net.to_artifact(prompts={"max_item_tokens": 4}))
    artifact = dataset.load()
    assert artifact["config"]["prompts"] == {"max_item_tokens": 4}
    restored = BiTuning.from_artifact(artifact, net.frozen.llm, "tiny", net.item_prompts, net.frozen.id_model)
    assert torch.equal(score_users(restored, USERS, HISTORIES, batch_size=2), scores)

    with pytest.raises(ValueError, match="trained on backbone 'tiny'"):
        BiTuning.from_artifact(artifact, net.frozen.llm, "another", net.item_prompts, net.frozen.id_model)


def test_one_expert_and_no_prefix_are_the_same_model_with_other_settings():
    no_moe = build(n_experts=1)
    out = no_moe.encode_users(**{k: v for k, v in batch().items() if k != "target"})
    assert out.balance_loss.item() == pytest.approx(1.0)  # one expert is always balanced
    no_prefix = build(prefix=False)
    assert no_prefix.mformer is None and no_prefix.frozen.id_model is None
    assert no_prefix.encode_users(**{k: v for k, v in batch().items() if k not in ("target", "history")}).balance_loss == 0
    with pytest.raises(ValueError, match="needs the frozen ID model"):
        BiTuning(no_moe.config, tiny_llm(), item_prompts(), None)


def test_aligned_id_slots_take_the_items_aligned_embeddings():
    llm = tiny_llm()
    aligned = torch.cat([torch.zeros(1, 32), torch.randn(N_ITEMS, 32)])
    config = BiTuningConfig(n_items=N_ITEMS, llm_hidden_size=32, backbone="tiny", rec_size=8, aligned_id_tokens=True)
    net = BiTuning(config, llm, item_prompts(), aligned_items=aligned)
    tokens = torch.tensor([[5, -3, 7, -12]])
    embedded = net._embed(tokens)
    torch.testing.assert_close(embedded[0, 1], aligned[3])
    torch.testing.assert_close(embedded[0, 3], aligned[12])
    torch.testing.assert_close(embedded[0, 2], llm.get_input_embeddings().weight[7])
    with pytest.raises(ValueError, match="no aligned embeddings"):
        build(prefix=False)._embed(tokens)
    with pytest.raises(ValueError, match="aligned ID tokens need"):
        BiTuning(config, llm, item_prompts())


# ---------------------------------------------------------------- preference tuning on the candidate head
CANDIDATES = torch.tensor([[3, 1, 2, 4], [7, 5, 6, 8], [7, 9, 10, 11], [12, 1, 5, 9]])  # target first, k = 3


def preference_batch() -> dict:
    out = batch()
    del out["target"]
    return {**out, "candidates": CANDIDATES}


@pytest.mark.parametrize(("objective", "at_start"), [(dmpo_loss, math.log(2)), (sdpo_loss, math.log(4))])
def test_the_preference_loss_starts_where_policy_equals_reference(objective, at_start):
    net = build()  # M-Former dropout 0: the policy in train mode is the reference
    net.set_item_side_trainable(False)
    net.eval()
    reference = score_candidates(net, USERS, HISTORIES, CANDIDATES, batch_size=3)
    net.train()
    b = preference_batch()
    loss = net.preference_loss(b["prompt"], b["length"], b["candidates"], reference, objective, beta=1.0,
                               history=b["history"])
    # Zero rewards: DMPO is -log sigma(0) = log 2, S-DPO -log sigma(-log k) = log(1 + k); plus the balance term.
    balance = net.config.balance_weight * net.encode_users(b["prompt"], b["length"], b["history"]).balance_loss
    assert (loss - balance).item() == pytest.approx(at_start, abs=1e-5)


def test_preference_steps_raise_the_positive_over_the_negatives_and_change_only_the_user_side():
    net = build()
    net.set_item_side_trainable(False)
    net.eval()
    reference = score_candidates(net, USERS, HISTORIES, CANDIDATES, batch_size=4)
    kept_reference = reference.clone()
    items_before = net.refresh_items().clone()
    before_frozen, before = frozen_state(net), {k: v.clone() for k, v in net.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=0.01)
    net.train()
    b = preference_batch()
    for _ in range(5):
        optimizer.zero_grad()
        net.preference_loss(b["prompt"], b["length"], b["candidates"], reference, dmpo_loss, 1.0, 0.5,
                            b["history"]).backward()
        optimizer.step()
    net.eval()
    reward = score_candidates(net, USERS, HISTORIES, CANDIDATES, batch_size=4) - reference
    assert (reward[:, 0] - reward[:, 1:].mean(1)).mean() > 0
    assert torch.equal(reference, kept_reference)
    after_frozen = frozen_state(net)
    assert all(torch.equal(before_frozen[k], after_frozen[k]) for k in before_frozen)
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    assert "user_suffix" in changed and not changed & {"item_suffix", "item_projection.weight", "item_projection.bias"}
    assert torch.equal(net.refresh_items(), items_before)


def test_candidate_logits_are_the_scores_of_the_full_ranking_over_the_temperature():
    net = build().eval()
    full = score_users(net, USERS, HISTORIES, batch_size=4)
    head = score_candidates(net, USERS, HISTORIES, CANDIDATES, batch_size=2)
    torch.testing.assert_close(head, full.gather(1, CANDIDATES) / net.config.temperature, atol=1e-5, rtol=1e-5)


def test_preference_tuning_refuses_a_trainable_item_side():
    net = build()
    b = preference_batch()
    with pytest.raises(ValueError, match="item side frozen"):
        net.preference_loss(b["prompt"], b["length"], b["candidates"], torch.zeros(4, 4), dmpo_loss, 1.0,
                            history=b["history"])


# ---------------------------------------------------------------- the real backbone
@pytest.fixture(scope="module")
def backbone():
    from llm_seqrec.llm.backbone import load_backbone

    return load_backbone(dtype="float32", device="cpu")


def test_prompts_truncate_titles_and_history(backbone):
    titles = {1: "Alpha beta gamma delta epsilon zeta eta theta", 2: "Short", 3: "Third item", 4: "Fourth"}
    config = PromptConfig(max_history_items=2, max_item_tokens=3)
    prompts = Prompts(config, backbone.tokenizer, titles)
    decode = backbone.tokenizer.decode
    assert decode(prompts.item(1)) == "Item: Alpha beta gamma"
    user = decode(prompts.user([1, 2, 3]))
    assert user == f"{config.user_intro}\n- Short\n- Third item\n{config.user_question}"
    with_summary = decode(prompts.user([4], summary="Likes  lab\ngear."))
    assert with_summary == f"{config.user_intro}\n{config.summary_intro} Likes lab gear.\n- Fourth\n{config.user_question}"
    assert prompts.items()[0] == [] and len(prompts.items()) == 5
    aligned = Prompts(PromptConfig(max_history_items=2, max_item_tokens=3, aligned_id_tokens=True), backbone.tokenizer, titles)
    assert aligned.item(2) == prompts.item_intro + [-2] + prompts.titles[2]
    assert aligned.user([1, 2, 3]).count(-2) == 1 and -1 not in aligned.user([1, 2, 3])


def test_no_vocabulary_logits_on_the_real_backbone(backbone):
    llm = backbone.model
    hook = llm.get_output_embeddings().register_forward_hook(lambda *_: pytest.fail("the LM head ran"))
    try:
        titles = {i: f"Lab item number {i}" for i in range(1, N_ITEMS + 1)}
        prompts = Prompts(PromptConfig(max_item_tokens=4), backbone.tokenizer, titles)
        config = BiTuningConfig(
            n_items=N_ITEMS, llm_hidden_size=backbone.hidden_size, backbone=backbone.name, rec_size=8,
            mformer=MFormerConfig(id_size=16, output_size=backbone.hidden_size, hidden_size=16, n_experts=2,
                                  n_query_tokens=2, num_heads=2),
        )
        net = BiTuning(config, llm, prompts.items(), SASRec(SASRecConfig(n_items=N_ITEMS, max_len=ID_LEN, hidden_size=16)))
        user_prompts = [prompts.user(h) for h in HISTORIES[:2]]
        data = collate_users(user_prompts, HISTORIES[:2], ID_LEN)
        net.loss(target=TARGETS[:2], **data).backward()
        assert net.user_suffix.grad is not None and net.mformer.router.weight.grad is not None
        scores = score_users(net.eval(), user_prompts, HISTORIES[:2], batch_size=2)
        assert scores.shape == (2, N_ITEMS + 1) and torch.isfinite(scores[:, 1:]).all()
    finally:
        hook.remove()
