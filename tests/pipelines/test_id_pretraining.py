"""data_processing then id_pretraining, through Kedro's SequentialRunner, on the Amazon sample."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import csv_params, layer_path, run_kedro
from safetensors.torch import load_file

from llm_seqrec.data.schema import SCORE_COLUMNS, split_inputs
from llm_seqrec.evaluation.metrics import target_ranks
from llm_seqrec.data.padding import left_pad
from llm_seqrec.models import SASRec
from llm_seqrec.models.sasrec_text import id_model_from_artifact

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("exclude_seen", [False, True])
def test_id_pretraining_writes_its_catalog_entries(kedro_project, amazon_sample, exclude_seen):
    params = {**csv_params(amazon_sample), "evaluation": {"exclude_seen": exclude_seen}}
    run_kedro(kedro_project, ["data_processing", "id_pretraining"], params)

    data = kedro_project / "data"
    sequences = pd.read_parquet(data / "03_primary/amazon-scientific/user_sequences.parquet")
    candidates = pd.read_parquet(data / "05_model_input/amazon-scientific/eval_candidates.parquet")
    n_users, n_items = len(sequences), len(pd.read_parquet(data / "03_primary/amazon-scientific/item_catalog.parquet"))

    versions = list((data / "06_models/amazon-scientific/sasrec").iterdir())
    assert len(versions) == 1
    model = SASRec.from_artifact({
        "config": json.loads((versions[0] / "sasrec/config.json").read_text()),
        "state_dict": load_file(versions[0] / "sasrec/model.safetensors"),
    }).eval()
    assert model.config.n_items == n_items and model.config.hidden_size == 32 and model.config.max_len == 50
    assert model.config.dropout == 0.5  # `dropout: auto` on the sparse Amazon sample

    log = pd.read_parquet(data / "08_reporting/amazon-scientific/sasrec_training_log.parquet")
    assert log["epoch"].tolist() == [1, 2, 3] and log["metric"].between(0, 1).all()
    assert log["stopped_by"].iloc[-1] == "epoch_cap"  # the quick env's 3 epochs

    embeddings = pd.read_parquet(data / "06_models/amazon-scientific/id_item_embeddings.parquet")
    assert embeddings["item_idx"].tolist() == list(range(1, n_items + 1))
    np.testing.assert_array_equal(np.stack(embeddings["embedding"]), model.item_embedding.weight[1:].detach().numpy())

    states = pd.read_parquet(data / "06_models/amazon-scientific/id_user_states.parquet")
    assert states.groupby("split").size().to_dict() == {"test": n_users, "valid": n_users}
    assert states["state"].iloc[0].dtype == np.float32

    scores = pd.read_parquet(data / "07_model_output/amazon-scientific/sasrec_scores.parquet")
    assert list(scores.columns) == SCORE_COLUMNS
    assert scores.groupby(["protocol", "split"]).size().eq(n_users).all()
    full = scores[scores["protocol"] == "full"]
    assert full["rank"].between(0, n_items - 1).all()
    assert full["n_ranked"].lt(n_items).any() if exclude_seen else full["n_ranked"].eq(n_items).all()
    sampled = scores[scores["protocol"] == "sampled"].merge(candidates, on=["user_idx", "split"])
    assert (sampled["n_ranked"] == sampled["candidates"].map(len)).all()

    # The tables agree with the saved model: recompute every user's test state, then score the stored ones.
    inputs, targets = split_inputs(sequences, "test")
    test_states = np.stack(states[states["split"] == "test"].set_index("user_idx").loc[sequences["user_idx"], "state"])
    with torch.no_grad():
        np.testing.assert_allclose(test_states, model.user_state(left_pad(inputs, model.config.max_len)).numpy(), atol=1e-5)
        item_scores = model.score_items(torch.from_numpy(test_states))
    test_rows = sampled[sampled["split"] == "test"].set_index("user_idx").loc[sequences["user_idx"]]
    expected = [item_scores[r, torch.as_tensor(c)].double().numpy() for r, c in enumerate(test_rows["candidates"])]
    np.testing.assert_allclose(np.concatenate(test_rows["candidate_scores"].tolist()), np.concatenate(expected), atol=1e-6)
    if not exclude_seen:
        test_full = full[full["split"] == "test"].set_index("user_idx").loc[sequences["user_idx"]]
        np.testing.assert_array_equal(test_full["rank"], target_ranks(item_scores, torch.tensor(targets)).numpy())
        assert [list(t) for t in test_full["top_items"]] == item_scores.topk(20, dim=1).indices.tolist()


def test_sasrec_trains_until_patience_and_a_time_budget_cut_says_so(kedro_project, amazon_sample, caplog):
    training_log = layer_path(kedro_project, "08_reporting", "sasrec_training_log.parquet")
    converge = {"sasrec": {"training": {"epochs": 200, "patience": 3}}}
    run_kedro(kedro_project, ["data_processing", "id_pretraining"], {**csv_params(amazon_sample), **converge})
    log = pd.read_parquet(training_log)
    # Stopped by patience, well before the epoch ceiling: the last 3 epochs none better than the best.
    assert log["stopped_by"].iloc[-1] == "patience" and log["stopped_by"].iloc[:-1].isna().all()
    assert 3 < len(log) < 200
    best = int(log.loc[log["metric"].idxmax(), "epoch"])
    assert log["epoch"].iloc[-1] - best == 3

    budget = {"sasrec": {"training": {"epochs": 200, "patience": 3, "max_minutes": 1e-4}}}  # less than one epoch
    with caplog.at_level(logging.INFO, logger="llm_seqrec.training.loop"):
        run_kedro(kedro_project, ["id_pretraining"], {**csv_params(amazon_sample), **budget})
    log = pd.read_parquet(training_log)
    assert log["epoch"].tolist() == [1] and log["stopped_by"].tolist() == ["time_budget"]
    assert "sasrec: stopped by the time budget (0.0001 min) at epoch 1" in caplog.text
    assert "validation still rising" in caplog.text


def test_sasrec_text_reads_the_item_vectors_which_a_rerun_does_not_encode_again(kedro_project, amazon_sample):
    run_kedro(kedro_project, ["data_processing", "id_pretraining"], csv_params(amazon_sample))
    catalog = pd.read_parquet(layer_path(kedro_project, "03_primary", "item_catalog.parquet"))
    vectors = pd.read_parquet(layer_path(kedro_project, "04_feature", "llm_item_embeddings.parquet"))
    assert vectors["item_idx"].tolist() == catalog["item_idx"].tolist() and vectors["has_text"].all()
    assert len(vectors["embedding"].iloc[0]) == 576
    cache = layer_path(kedro_project, "04_feature", "llm_item_embedding_cache")
    assert len(list(cache.glob("part-*.parquet"))) == 1

    versions = list(layer_path(kedro_project, "06_models", "sasrec_text").iterdir())
    assert len(versions) == 1
    model = id_model_from_artifact({
        "config": json.loads((versions[0] / "sasrec_text/config.json").read_text()),
        "state_dict": load_file(versions[0] / "sasrec_text/model.safetensors"),
    })
    assert model.config.text_dim == 576 and model.text_coverage == 1.0
    scores = pd.read_parquet(layer_path(kedro_project, "07_model_output", "sasrec_text_scores.parquet"))
    assert scores.groupby(["protocol", "split"]).size().eq(len(pd.read_parquet(
        layer_path(kedro_project, "03_primary", "user_sequences.parquet")))).all()
    log = pd.read_parquet(layer_path(kedro_project, "08_reporting", "sasrec_text_training_log.parquet"))
    assert log["epoch"].tolist() == [1, 2, 3]

    run_kedro(kedro_project, ["id_pretraining"], csv_params(amazon_sample), node_names=["embed_items"])
    assert len(list(cache.glob("part-*.parquet"))) == 1  # nothing encoded again
    run_kedro(kedro_project, ["id_pretraining"], {**csv_params(amazon_sample), "llm_item_embeddings": {"layer": 3}},
              node_names=["embed_items"])
    assert len(list(cache.glob("part-*.parquet"))) == 2  # another depth: every item encoded again
