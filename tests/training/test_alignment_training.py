"""RA-Rec's training procedure without Kedro, on the shipped SmolLM2 and a small synthetic catalogue."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from llm_seqrec.data.leakage import LeakageError
from llm_seqrec.evaluation.scoring import validation_metric
from llm_seqrec.llm.backbone import load_backbone
from llm_seqrec.training import TrainingConfig
from llm_seqrec.training.alignment import AlignmentConfig, id_table, load_ra_rec, train_aligner
from llm_seqrec.training.id_model import eval_user_sample

N_ITEMS, N_USERS, ID_DIM = 12, 10, 8
WORDS = ["beaker", "magnet", "solder", "lens", "prism", "wire", "clamp", "flask", "gauge", "coil", "valve", "probe"]


@pytest.fixture(scope="module")
def llm():
    return load_backbone(device="cpu", dtype="float32")


def tables():
    rng = np.random.default_rng(0)
    catalog = pd.DataFrame({"item_idx": np.arange(1, N_ITEMS + 1), "item_id": [f"i{i}" for i in range(1, N_ITEMS + 1)],
                            "title": [w.title() for w in WORDS], "text": [f"{w.title()} for the lab" for w in WORDS]})
    rows = []
    for user in range(1, N_USERS + 1):
        items = [int(i) for i in rng.choice(np.arange(1, N_ITEMS + 1), size=int(rng.integers(5, 8)), replace=False)]
        rows.append((user, f"u{user}", items[:-2], items[-2], items[-1]))
    users = pd.DataFrame(rows, columns=["user_idx", "user_id", "train_items", "valid_target", "test_target"])
    samples = pd.DataFrame({
        "user_idx": users["user_idx"],
        "position": users["train_items"].map(lambda t: len(t) - 1),
        "history": users["train_items"].map(lambda t: t[:-1][-3:]),
        "target": users["train_items"].map(lambda t: t[-1]),
    })
    embeddings = pd.DataFrame({"item_idx": np.arange(1, N_ITEMS + 1),
                               "embedding": list(rng.standard_normal((N_ITEMS, ID_DIM)).astype(np.float32))})
    return catalog, users, samples, embeddings


CONFIG = AlignmentConfig(history_items=3, item_tokens=6, score_dim=8, n_negatives=4, eval_batch_size=4,
                         training=TrainingConfig(epochs=2, batch_size=4, lr=2e-3, eval_users=6, device="cpu", progress=False))


def test_train_aligner_keeps_frozen_weights_and_records_its_budget(llm):
    catalog, users, samples, embeddings = tables()
    artifact, log = train_aligner(samples, users, catalog, embeddings, llm, CONFIG)
    config = artifact["config"]
    assert config["frozen_check"]["llm_unchanged"] and config["frozen_check"]["id_table_unchanged"]
    assert len(config["frozen_check"]["llm_sha256"]) == 16  # data.fingerprint's digits
    assert config["prompt"] == {"history_items": 3, "item_tokens": 6, "instruction": CONFIG.instruction,
                                "readout": CONFIG.readout}
    assert config["budget"]["samples"] == N_USERS and config["budget"]["epochs"] == 2
    assert log["model"].eq("ra_rec").all() and log["epoch"].tolist() == [1, 2] and log["backbone_dtype"].eq("float32").all()
    assert torch.equal(artifact["state_dict"]["id_table"], id_table(embeddings, N_ITEMS))
    # The saved weights are the best epoch's: reloaded, they score the seeded validation users as logged.
    model = load_ra_rec(artifact, llm, catalog, CONFIG.eval_batch_size)
    assert model.backbone_dtype == "float32"
    valid = eval_user_sample(users, CONFIG.training.eval_users, CONFIG.training.seed)
    assert validation_metric(model, valid, batch_size=CONFIG.eval_batch_size) == pytest.approx(log["metric"].max(), abs=1e-12)
    with pytest.raises(ValueError, match="trained on backbone"):
        load_ra_rec({**artifact, "config": {**config, "backbone": "another"}}, llm, catalog)


def test_the_aligner_follows_the_backbone_depth_and_refuses_another(llm):
    catalog, users, samples, embeddings = tables()
    short = load_backbone(device="cpu", dtype="float32", layers=2)
    one_epoch = dataclasses.replace(CONFIG, training=dataclasses.replace(CONFIG.training, epochs=1))
    artifact, _ = train_aligner(samples, users, catalog, embeddings, short, one_epoch)
    assert artifact["config"]["aligner"]["n_layers"] == 2  # one soft prompt per kept layer
    assert artifact["config"]["backbone"] == short.name == f"{llm.name}-layers2"
    assert load_ra_rec(artifact, load_backbone(device="cpu", dtype="float32", layers=2), catalog).aligner.config.n_layers == 2
    with pytest.raises(ValueError, match=r"aligner_model was trained at depth 2 .* the backbone has 30 layers: "
                                         r"set its section's layers=2 \(or backbone\.layers=2\) or retrain"):
        load_ra_rec(artifact, llm, catalog)


def test_train_aligner_refuses_samples_that_show_their_target(llm):
    catalog, users, samples, embeddings = tables()
    samples.at[0, "history"] = [*samples.at[0, "history"][1:], samples.at[0, "target"]]
    with pytest.raises(LeakageError, match="alignment_samples"):
        train_aligner(samples, users, catalog, embeddings, llm, CONFIG)


def test_alignment_config_is_the_parameter_section():
    with pytest.raises(TypeError):
        AlignmentConfig(sample=3)  # a misspelt key is refused, as in the parameters
    assert dataclasses.replace(CONFIG, samples=3).prompt() == CONFIG.prompt()
