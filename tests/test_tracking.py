"""MLflow tracking through kedro-mlflow: one run per `kedro run`, a nested run per trained model with its
parameters, per-epoch metrics, training cost and artifact paths; off by the `tracking.mlflow` parameter."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import csv_params, layer_path, run_kedro

pytestmark = pytest.mark.slow


def test_a_trained_model_is_a_nested_mlflow_run_and_the_parameter_turns_tracking_off(kedro_project, amazon_sample):
    import mlflow
    from mlflow.tracking import MlflowClient

    params = csv_params(amazon_sample)
    run_kedro(kedro_project, ["data_processing"], params)
    assert not (kedro_project / "mlruns").exists()  # conf/quick: tracking.mlflow is false

    run_kedro(kedro_project, ["id_pretraining"], {**params, "tracking": {"mlflow": True}})
    assert mlflow.active_run() is None  # the next session in this process must not log into it
    client = MlflowClient(tracking_uri=(kedro_project / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("llm_seqrec")
    runs = client.search_runs([experiment.experiment_id])
    models = {run.data.tags.get("model"): run for run in runs if "model" in run.data.tags}
    assert len(runs) == 3 and set(models) == {"sasrec", "sasrec_text"}  # the kedro run and the two models trained in it
    parent, model = next(run for run in runs if "model" not in run.data.tags), models["sasrec"]
    assert models["sasrec_text"].data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert model.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert model.data.tags["dataset"] == "amazon-scientific" and model.info.run_name == "amazon-scientific/sasrec"

    # Parameters, one per key; the same values kedro-mlflow logs on the parent run.
    assert model.data.params["sasrec.training.lr"] == parent.data.params["sasrec.training.lr"] == "0.002"
    assert model.data.params["sasrec.hidden_size"] == "32"
    # The model as built: its artifact's config, `dropout: auto` resolved (the sparse Amazon sample: 0.5).
    assert model.data.params["sasrec.dropout"] == "auto" and model.data.params["sasrec_model.config.dropout"] == "0.5"
    log = pd.read_parquet(layer_path(kedro_project, "08_reporting", "sasrec_training_log.parquet"))
    losses = [m.value for m in client.get_metric_history(model.info.run_id, "loss")]
    assert losses == pytest.approx(log["loss"].tolist()) and len(losses) == 3
    assert model.data.metrics["trainable_parameters"] == log["trainable_parameters"].iloc[0]
    assert model.data.metrics["train_minutes"] == pytest.approx(log["seconds"].sum() / 60)
    assert model.data.metrics["peak_rss_mb"] == pytest.approx(log["peak_rss_mb"].max())
    artifact = Path(model.data.tags["artifact.sasrec_model"])
    assert artifact.parent.parent == layer_path(kedro_project, "06_models", "sasrec") and artifact.is_dir()

    run_kedro(kedro_project, ["id_pretraining"], {**params, "tracking": {"mlflow": False}})
    assert len(client.search_runs([experiment.experiment_id])) == 3  # nothing logged with tracking off


def test_parameter_keys_lose_the_characters_mlflow_refuses():
    from mlflow.utils.validation import validate_param_and_metric_name

    from llm_seqrec.hooks import _flat

    flat = _flat({"aligner_model.config": {"best_valid_ndcg@10": 0.01, "dims": {"id": 64}}, "lr": 0.001})
    assert flat == {"aligner_model.config.best_valid_ndcg_10": "0.01", "aligner_model.config.dims.id": "64", "lr": "0.001"}
    assert all(validate_param_and_metric_name(key) for key in flat)
