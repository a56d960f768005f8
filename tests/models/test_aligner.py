"""RA-Rec's aligner on a tiny random Llama: soft tokens at every layer, gradients only in the aligner,
frozen weights unchanged by training, scores and the saved artifact."""

import pytest
import torch
from transformers import LlamaConfig, LlamaModel

from llm_seqrec.data.fingerprint import weights_fingerprint
from llm_seqrec.datasets import TorchWeightsDataset
from llm_seqrec.models.aligner import AlignerConfig, IDAligner, RARec, layerwise_infonce
from llm_seqrec.models.aligner_prompt import PromptLayout
from llm_seqrec.models.recommender import FullRanker, Queries
from llm_seqrec.training import TrainingConfig
from llm_seqrec.training import fit

N_ITEMS, ID_DIM, HIDDEN, LAYERS = 12, 8, 32, 3
INSTRUCTION, READOUT = (5, 6, 7), (8, 9)


@pytest.fixture
def decoder() -> LlamaModel:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=LAYERS,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaModel(config).eval().requires_grad_(False)


@pytest.fixture
def model(decoder) -> RARec:
    # Item i's text line is two or three tokens, so rows differ in length and get padded.
    layout = PromptLayout(INSTRUCTION, READOUT, {i: [10 + i, 30 + i] + [50] * (i % 2) for i in range(1, N_ITEMS + 1)},
                          placeholder=0, history_items=4)
    id_table = torch.cat([torch.zeros(1, ID_DIM), torch.randn(N_ITEMS, ID_DIM)])
    aligner = IDAligner(AlignerConfig(N_ITEMS, ID_DIM, HIDDEN, LAYERS, len(INSTRUCTION), score_dim=16), id_table)
    rarec = RARec(decoder, aligner, layout)
    rarec.initialise()
    return rarec


def training_batch(model: RARec, histories, targets) -> dict:
    batch = model.layout.batch(histories)
    batch["target"] = torch.tensor(targets)
    batch["negatives"] = torch.randint(1, N_ITEMS + 1, (len(histories), 5))
    return batch


HISTORIES = [[1, 2, 3], [4, 5, 6, 7, 8, 9], [10], [11, 12, 1, 2]]


def test_layout_places_ids_before_each_item_line(model):
    batch = model.layout.batch(HISTORIES)
    K = len(INSTRUCTION)
    # The second history is cut to its last four items.
    shown = [[1, 2, 3], [6, 7, 8, 9], [10], [11, 12, 1, 2]]
    assert batch["id_items"].tolist() == [i for h in shown for i in h]
    assert batch["id_rows"].tolist() == [r for r, h in enumerate(shown) for _ in h]
    line = model.layout.item_text
    for r, h in enumerate(shown):
        expected = [0] * K
        for item in h:
            expected += [0, *line[item]]
        expected += list(READOUT)
        assert batch["ids"][r, : len(expected)].tolist() == expected
        assert batch["mask"][r].sum() == len(expected) and batch["last"][r] == len(expected) - 1
        cols = batch["id_cols"][batch["id_rows"] == r]
        assert [expected[c + 1] for c in cols.tolist()] == [line[i][0] for i in h]
        text = list(INSTRUCTION) + [t for item in h for t in line[item]] + list(READOUT)
        assert batch["text_ids"][r, : len(text)].tolist() == text and batch["text_last"][r] == len(text) - 1


def test_soft_tokens_replace_the_input_of_every_layer(model, decoder):
    batch = model.layout.batch(HISTORIES)
    seen = []
    # A layer's first operation (its input norm) sees the layer's input after the aligner's replacement.
    hooks = [layer.input_layernorm.register_forward_pre_hook(lambda _m, args: seen.append(args[0])) for layer in decoder.layers]
    try:
        with torch.no_grad():
            model(batch)
    finally:
        for hook in hooks:
            hook.remove()
    expected = model.aligner.soft_values(batch["id_items"])
    for layer, states in enumerate(seen):
        torch.testing.assert_close(states[batch["id_rows"], batch["id_cols"]], expected[layer])
        torch.testing.assert_close(states[:, : len(INSTRUCTION)], model.aligner.prefix[layer].expand(len(HISTORIES), -1, -1))
    assert len(seen) == LAYERS
    # The aligner's hooks are gone afterwards: the plain decoder is untouched.
    assert all(not layer._forward_pre_hooks and not layer._forward_hooks for layer in decoder.layers)


def test_initial_prefixes_reproduce_the_instruction_text(model):
    # Before training, the prefix vectors are the LLM's own states of the instruction, so at the
    # instruction's last position the hybrid and text-only passes agree at every layer.
    batch = model.layout.batch(HISTORIES)
    at_instruction_end = torch.full((len(HISTORIES),), len(INSTRUCTION) - 1)
    with torch.no_grad():
        _, hybrid = model._run(batch["ids"], batch["mask"], at_instruction_end, model._soft(batch))
        _, text = model._run(batch["text_ids"], batch["text_mask"], at_instruction_end)
    torch.testing.assert_close(hybrid, text, rtol=1e-4, atol=1e-5)


def test_the_user_state_depends_on_the_id_embeddings(model):
    with torch.no_grad():
        before = model.user_vectors(HISTORIES)
        model.aligner.id_table[2] += 1.0  # item 2 is in the first and last histories only
        after = model.user_vectors(HISTORIES)
    changed = (before - after).abs().amax(1) > 1e-6
    assert changed.tolist() == [True, False, False, True]


def test_gradients_reach_only_the_aligner(model, decoder):
    loss = model.loss(training_batch(model, HISTORIES, [4, 1, 2, 3]), infonce_weight=0.5, temperature=0.1)
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in decoder.parameters())
    assert model.aligner.id_table.grad is None and not model.aligner.id_table.requires_grad
    for name, p in model.aligner.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # Every layer's reparameterisation and prefix gets a gradient, not only the first.
    assert (model.aligner.weight.grad.abs().sum((1, 2)) > 0).all()
    assert (model.aligner.prefix.grad.abs().sum((1, 2)) > 0).all()


def test_training_moves_the_aligner_and_leaves_llm_and_id_table_unchanged(model, decoder):
    llm_before = weights_fingerprint(decoder.state_dict().items())
    table_before = model.aligner.id_table.clone()
    aligner_before = {k: v.clone() for k, v in model.aligner.named_parameters()}
    batches = [training_batch(model, HISTORIES, [4, 1, 2, 3]) for _ in range(3)]
    params = TrainingConfig(epochs=3, batch_size=4, lr=1e-2, device="cpu", progress=False)
    result = fit(model.aligner, lambda _a, b: model.loss(b, 0.1, 0.1), lambda epoch, g: batches, None, params, "aligner")
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert weights_fingerprint(decoder.state_dict().items()) == llm_before
    assert torch.equal(model.aligner.id_table, table_before)
    assert all(not torch.equal(p, aligner_before[k]) for k, p in model.aligner.named_parameters())


def test_full_ranking_is_one_matmul_over_aligned_items(model):
    with torch.no_grad():
        queries = model.user_vectors(HISTORIES)
        scores = model.score_items(queries)
        keys = model.aligner.item_keys()
        assert scores.shape == (len(HISTORIES), N_ITEMS + 1) and torch.isinf(scores[:, 0]).all()
        torch.testing.assert_close(scores[:, 1:], queries @ keys[1:].T)
        items = torch.tensor([[3, 1], [12, 7]])
        torch.testing.assert_close(model.aligner.item_keys(items), keys[items])
        torch.testing.assert_close(model.aligner.aligned_items()[items[0]], model.aligner.soft_values(items[0])[0])


@pytest.mark.parametrize("query_batch_size", [None, 3])
def test_score_all_passes_query_batches_then_ranks_every_user_at_once(model, query_batch_size):
    model.query_batch_size = query_batch_size
    assert isinstance(model, FullRanker) and model.backbone_dtype == ""
    with torch.no_grad():
        scores = model.score_all(Queries(tuple(range(1, 5)), "valid", tuple(tuple(h) for h in HISTORIES)))
        size = query_batch_size or len(HISTORIES)
        vectors = torch.cat([model.user_vectors(HISTORIES[i : i + size]) for i in range(0, len(HISTORIES), size)])
    assert torch.equal(scores, model.score_items(vectors))


def test_layerwise_infonce_prefers_matching_rows():
    text = torch.randn(LAYERS, 6, HIDDEN)
    matched = layerwise_infonce(text + 0.01 * torch.randn_like(text), text, 0.1)
    shuffled = layerwise_infonce(text[:, torch.tensor([1, 2, 3, 4, 5, 0])], text, 0.1)
    assert matched < 0.01 < shuffled


def test_aligner_artifact_round_trips_through_the_weights_dataset(model, tmp_path):
    dataset = TorchWeightsDataset(filepath=str(tmp_path / "aligner"))
    dataset.save(model.aligner.to_artifact())
    loaded = IDAligner.from_artifact(dataset.load())
    assert loaded.config == model.aligner.config
    with torch.no_grad():
        torch.testing.assert_close(loaded.aligned_items(), model.aligner.aligned_items())
        torch.testing.assert_close(loaded.item_keys(), model.aligner.item_keys())
    assert torch.equal(loaded.id_table, model.aligner.id_table)
