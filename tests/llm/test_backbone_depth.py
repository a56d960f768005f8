"""``backbone.layers``: the first N decoder layers of the real SmolLM2 compute what they compute inside the
full model, and an adapter trained at one depth is refused at another with the setting that fits."""

import pytest
import torch

from llm_seqrec.llm.backbone import check_backbone, load_backbone
from llm_seqrec.models.bituning import BiTuning
from llm_seqrec.models.llm_recommender import LLMRecommender, LoraSettings, PromptSettings, RecommenderConfig

TITLES = {1: "Nitrile gloves", 2: "Digital multimeter with probes", 3: "Pipette tips"}


@pytest.fixture(scope="module")
def full():
    return load_backbone(dtype="float32", device="cpu")


def test_truncated_backbone_is_the_first_layers_of_the_full_one(full):
    short = load_backbone(dtype="float32", device="cpu", layers=8)
    assert full.n_layers == full.model.config.num_hidden_layers == 30  # SmolLM2-135M
    assert short.n_layers == short.model.config.num_hidden_layers == 8
    assert short.name == f"{full.name}-layers8" and short.dtype == full.dtype
    ids = full.tokenizer("Buys pipette tips and a digital multimeter.", return_tensors="pt").input_ids
    with torch.no_grad():
        whole = full.model(ids, output_hidden_states=True)
        cut = short.model(ids, output_hidden_states=True)
        # hidden_states: the embeddings, then each layer's output; the last one after the kept final norm
        for layer in range(8):
            assert torch.equal(cut.hidden_states[layer], whole.hidden_states[layer]), layer
        torch.testing.assert_close(cut.hidden_states[8], full.model.get_decoder().norm(whole.hidden_states[8]))
        torch.testing.assert_close(cut.logits, full.model.lm_head(cut.hidden_states[8]))
    # the pristine model stays whole: the next load is full depth again, and asking for all layers is no change
    assert load_backbone(dtype="float32", device="cpu").n_layers == 30
    all_layers = load_backbone(dtype="float32", device="cpu", layers=30)
    assert all_layers.name == full.name
    with torch.no_grad():
        assert torch.equal(all_layers.model(ids).logits, whole.logits)


@pytest.mark.parametrize("layers", [0, 31])
def test_a_depth_the_backbone_lacks_is_refused(layers):
    with pytest.raises(ValueError, match=rf"backbone\.layers={layers}: .* has 30 decoder layers, give 1\.\.30"):
        load_backbone(dtype="float32", device="cpu", layers=layers)


def test_an_adapter_trained_at_one_depth_refuses_another():
    short = load_backbone(dtype="float32", device="cpu", layers=2)
    config = RecommenderConfig(head="yes_no", backbone=short.name, lora=LoraSettings(r=2), prompt=PromptSettings(recent_items=1))
    artifact = LLMRecommender(short, config, TITLES).to_artifact()
    assert artifact["config"]["backbone"].endswith("-layers2")
    LLMRecommender.from_artifact(artifact, load_backbone(dtype="float32", device="cpu", layers=2), TITLES)
    with pytest.raises(ValueError, match=r"trained at depth 2 of backbone .*, the backbone has 3 layers: "
                                         r"set its section's layers=2 \(or backbone\.layers=2\) or retrain"):
        LLMRecommender.from_artifact(artifact, load_backbone(dtype="float32", device="cpu", layers=3), TITLES)
    full = load_backbone(dtype="float32", device="cpu")
    with pytest.raises(ValueError, match=r"the backbone has 30 layers: set its section's layers=2 \(or backbone\.layers=2\)"):
        LLMRecommender.from_artifact(artifact, full, TITLES)
    # and one trained on every layer, put on a truncated backbone
    with pytest.raises(ValueError, match=r"trained at full depth .* has 2 layers: set its section's layers=all \(or backbone\.layers=null\)"):
        LLMRecommender(short, RecommenderConfig(head="yes_no", backbone=full.name), TITLES)


def test_laser_adapters_check_the_depth_too(full):
    artifact = {"config": {"model": {"n_items": 3, "llm_hidden_size": full.hidden_size, "backbone": f"{full.name}-layers8"}}}
    with pytest.raises(ValueError, match=r"trained at depth 8 .* the backbone has 30 layers: set its section's layers=8"):
        BiTuning.from_artifact(artifact, full.model, full.name, [[1], [2], [3]])


def test_another_backbone_is_refused_as_before():
    with pytest.raises(ValueError, match=r"trained on backbone 'other-layers8', not 'mine-layers8'"):
        check_backbone("other-layers8", "mine-layers8", 8)
