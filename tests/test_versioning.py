"""Versioned model artifacts: every run leaves a version of its own, and ``kedro run --load-versions``
reproduces an earlier evaluation exactly from the version it names."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import csv_params, finish, kedro_run, layer_path, run_kedro

pytestmark = pytest.mark.slow


def test_load_versions_reproduces_an_earlier_evaluation(kedro_project, amazon_sample):
    project, params = kedro_project, csv_params(amazon_sample)
    run_kedro(project, ["data_processing"], params)
    versions = layer_path(project, "06_models", "sasrec")
    scores = layer_path(project, "07_model_output", "sasrec_scores.parquet")

    def train_and_evaluate(seed: int, options: list[str] = ()) -> pd.DataFrame:
        finish(kedro_run(project, "id_pretraining", params, [f"sasrec.training.seed={seed}"], options))
        finish(kedro_run(project, "evaluation", params, options=["--nodes=score_popularity,compute_metrics"]))
        return pd.read_csv(project / "data/08_reporting/metrics.csv")

    first = train_and_evaluate(seed=1)
    first_version = sorted(path.name for path in versions.iterdir())[0]
    first_scores = pd.read_parquet(scores)
    second = train_and_evaluate(seed=2)
    assert len(list(versions.iterdir())) == 2  # two runs, two versions; the first is untouched
    assert not second.equals(first)  # another seed, another model: the check below can tell them apart

    finish(kedro_run(project, "id_pretraining", params, options=[
        "--nodes=compute_user_states,score_sasrec", f"--load-versions=sasrec_model:{first_version}",
    ]))
    finish(kedro_run(project, "evaluation", params, options=["--nodes=compute_metrics"]))
    pd.testing.assert_frame_equal(pd.read_parquet(scores), first_scores)
    pd.testing.assert_frame_equal(pd.read_csv(project / "data/08_reporting/metrics.csv"), first)
    assert len(list(versions.iterdir())) == 2  # scoring an old version writes no new one
