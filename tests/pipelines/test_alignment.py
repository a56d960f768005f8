"""The alignment stage end to end on 300 real Amazon users, and its embeddings through the catalog."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import AUTO_DTYPE, REPO, csv_params, run_kedro
from kedro.io import DataCatalog
from safetensors.torch import load_file

from llm_seqrec.data.leakage import LeakageError
from llm_seqrec.data.schema import SCORE_COLUMNS
from llm_seqrec.evaluation.protocol import evaluation_user_sets, llm_user_sample, metrics_table
from llm_seqrec.models.aligner import IDAligner

SAMPLE = 8  # conf/quick: evaluation.llm_user_sample
TEST_SAMPLES = 12  # conf/quick: alignment.samples


def load_through_catalog(kedro_project: Path, name: str, params: dict):
    from kedro.framework.session import KedroSession

    cwd = os.getcwd()
    os.chdir(kedro_project)
    try:
        with KedroSession.create(project_path=kedro_project, env="quick", runtime_params=params) as session:
            return session.load_context().catalog.load(name)
    finally:
        os.chdir(cwd)


def only_version(folder: Path) -> Path:
    versions = list(folder.iterdir())
    assert len(versions) == 1
    return versions[0] / folder.name


@pytest.mark.slow
def test_alignment_pipeline(kedro_project, amazon_sample):
    run_kedro(kedro_project, ["data_processing", "id_pretraining", "alignment"], params=csv_params(amazon_sample))
    data = kedro_project / "data"
    sequences = pd.read_parquet(data / "03_primary/amazon-scientific/user_sequences.parquet")
    n_items = len(pd.read_parquet(data / "03_primary/amazon-scientific/item_catalog.parquet"))

    samples = pd.read_parquet(data / "05_model_input/amazon-scientific/alignment_samples.parquet")
    assert 0 < len(samples) <= TEST_SAMPLES and samples["history"].map(len).between(1, 3).all()
    train = sequences.set_index("user_idx")["train_items"]
    assert all(train[u][p] == t for u, p, t in zip(samples["user_idx"], samples["position"], samples["target"], strict=True))

    # The artifact: aligner weights only, with the ID table it was trained on; the frozen check passed.
    folder = only_version(data / "06_models/amazon-scientific/aligner")
    config = json.loads((folder / "config.json").read_text())
    state = load_file(folder / "model.safetensors")
    assert config["frozen_check"]["llm_unchanged"] and config["frozen_check"]["id_table_unchanged"]
    assert config["budget"]["samples"] == len(samples) and config["budget"]["epochs"] == 2
    assert config["budget"]["trainable_parameters"] == sum(v.numel() for k, v in state.items() if k != "id_table")
    log = pd.read_parquet(data / "08_reporting/amazon-scientific/ra_rec_training_log.parquet")
    assert log["epoch"].tolist() == [1, 2] and log["trainable_parameters"].eq(config["budget"]["trainable_parameters"]).all()
    assert not any(k.startswith(("decoder", "model.", "layers")) for k in state)
    sasrec = load_file(only_version(data / "06_models/amazon-scientific/sasrec") / "model.safetensors")
    assert torch.equal(state["id_table"], sasrec["item_embedding.weight"])  # SASRec's embeddings, unchanged

    # Aligned embeddings: every item, p^(0) of its ID embedding in the LLM's input space, via the catalog.
    aligned = load_through_catalog(kedro_project, "aligned_item_embeddings", csv_params(amazon_sample))
    assert list(aligned.columns) == ["item_idx", "item_id", "title", "embedding"]
    assert aligned["item_idx"].tolist() == list(range(1, n_items + 1))
    vectors = np.stack(aligned["embedding"].to_numpy())
    assert vectors.dtype == np.float32 and vectors.shape == (n_items, 576)
    aligner = IDAligner.from_artifact({"config": config["aligner"], "state_dict": state})
    with torch.no_grad():
        np.testing.assert_allclose(vectors, aligner.aligned_items()[1:].numpy(), rtol=1e-5, atol=1e-6)

    # ra_rec scores on the LLM user sample: full ranking over every item and the sampled protocol.
    scores = pd.read_parquet(data / "07_model_output/amazon-scientific/ra_rec_scores.parquet")
    assert list(scores.columns) == [*SCORE_COLUMNS, "backbone_dtype"] and set(scores["backbone_dtype"]) == {AUTO_DTYPE}
    users = llm_user_sample(sequences, SAMPLE, seed=42)
    assert scores.groupby(["protocol", "split"])["user_idx"].agg(sorted).map(list).eq([users.tolist()] * 4).all()
    full = scores[scores["protocol"] == "full"]
    # evaluation.exclude_seen: each user's input items leave the ranking, the target never does.
    assert full["n_ranked"].between(2, n_items - 1).all() and (full["rank"] < full["n_ranked"]).all()
    assert full["top_items"].map(len).eq(20).all()
    sampled = scores[scores["protocol"] == "sampled"]
    assert sampled["n_ranked"].eq(21).all() and sampled["candidate_scores"].map(lambda s: np.isfinite(s).all()).all()
    # The shared metrics accept the table, on the LLM user sample.
    metrics = metrics_table({"ra_rec": scores}, "amazon-scientific", [10, 100], evaluation_user_sets(sequences, SAMPLE, 42))
    full_test = metrics[(metrics["protocol"] == "full") & (metrics["split"] == "test")]
    assert {"hr@10", "hr@100", "ndcg@10"} <= set(full_test["metric"]) and set(full_test["users"]) == {f"sample{SAMPLE}"}

    # The leakage guard runs in the pipeline: a sample whose history shows its own target stops training
    # before any weights are written.
    tampered = samples.copy()
    tampered.at[0, "history"] = [*tampered.at[0, "history"][1:], tampered.at[0, "target"]]
    tampered.to_parquet(data / "05_model_input/amazon-scientific/alignment_samples.parquet")
    with pytest.raises(LeakageError, match="alignment_samples"):
        run_kedro(kedro_project, ["alignment"], params=csv_params(amazon_sample), node_names=["train_aligner"])
    assert len(list((data / "06_models/amazon-scientific/aligner").iterdir())) == 1


def test_aligned_embeddings_round_trip_through_the_catalog(tmp_path):
    entry = yaml.safe_load((REPO / "conf/base/catalog.yml").read_text())["aligned_item_embeddings"]
    catalog = DataCatalog.from_config({"aligned_item_embeddings": {**entry, "filepath": str(tmp_path / "aligned.parquet")}})
    frame = pd.DataFrame({
        "item_idx": np.arange(1, 4, dtype=np.int64),
        "item_id": ["a", "b", "c"],
        "title": ["Beaker", "Magnet", "Solder kit"],
        "embedding": list(np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)),
    })
    catalog.save("aligned_item_embeddings", frame)
    loaded = catalog.load("aligned_item_embeddings")
    pd.testing.assert_frame_equal(loaded.drop(columns="embedding"), frame.drop(columns="embedding"))
    restored = np.stack(loaded["embedding"].to_numpy())
    assert restored.dtype == np.float32 and np.array_equal(restored, np.stack(frame["embedding"]))
