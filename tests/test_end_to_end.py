"""`kedro run` of every stage on 300 real Amazon users with the real SmolLM2 and the `test`
configuration; then what an analyst does next: re-run one stage alone, open the notebook, build
kedro-viz."""

from __future__ import annotations

import os
import subprocess
import sys

import nbformat
import pandas as pd
import pytest
from conftest import REPO, csv_params, make_kedro_project, run_kedro
from nbclient import NotebookClient

from llm_seqrec.pipelines.evaluation.pipeline import SCORED_MODELS

DATASET = "amazon-scientific"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, amazon_sample):
    project = make_kedro_project(tmp_path_factory.mktemp("e2e"))
    # The notebook and kedro-viz start Kedro without --params: the data set goes in the conf env.
    (project / "conf" / "test" / "globals.yml").write_text(f"dataset: {DATASET}\n")
    dataset = csv_params(amazon_sample, DATASET)["dataset"]
    (project / "conf" / "test" / "parameters_dataset.yml").write_text(
        "dataset:\n" + "".join(f"  {key}: {value}\n" for key, value in dataset.items())
    )
    run_kedro(project, ["__default__"])
    return project


@pytest.mark.slow
def test_every_model_reaches_metrics(finished_run):
    metrics = pd.read_csv(finished_run / "data" / "08_reporting" / "metrics.csv")
    # dmpo_few_shot_scores holds one model per few-shot budget (conf/test: 2 users).
    assert set(metrics["model"]) == set(SCORED_MODELS) - {"dmpo_few_shot"} | {"dmpo_u2"}
    assert set(metrics["dataset"]) == {DATASET}
    assert metrics["value"].between(0, 1).all()
    report = (finished_run / "data" / "08_reporting" / "metrics.md").read_text()
    for model in set(metrics["model"]):
        assert f"| {model} |" in report


@pytest.mark.slow
def test_one_stage_reruns_alone_from_persisted_inputs(finished_run):
    before = pd.read_csv(finished_run / "data" / "08_reporting" / "metrics.csv")
    run_kedro(finished_run, ["evaluation"])
    after = pd.read_csv(finished_run / "data" / "08_reporting" / "metrics.csv")
    pd.testing.assert_frame_equal(before, after)


@pytest.mark.slow
def test_notebook_runs_headless(finished_run):
    notebook = nbformat.read(REPO / "notebooks" / "explore_results.ipynb", as_version=4)
    env = {**os.environ, "KEDRO_ENV": "test", "KEDRO_DISABLE_TELEMETRY": "true"}
    (finished_run / "notebooks").mkdir(exist_ok=True)
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(finished_run / "notebooks")}}
    )
    client.execute(env=env)
    text = "\n".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )
    assert "summaries;" in text and "data sets:" in text


@pytest.mark.slow
def test_kedro_viz_builds(finished_run):
    env = {**os.environ, "KEDRO_ENV": "test", "KEDRO_DISABLE_TELEMETRY": "true"}
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "viz", "build"], cwd=finished_run, env=env, capture_output=True, text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (finished_run / "build" / "index.html").is_file()
