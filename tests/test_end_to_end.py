"""`kedro run` of every stage on 300 real Amazon users with the real SmolLM2 and the `test`
configuration (the cross-domain models trained on MovieLens-100K); then what an analyst does next: re-run one stage alone, open the notebook, build
kedro-viz."""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from conftest import REPO, csv_params, make_kedro_project, run_kedro
from nbclient import NotebookClient

from llm_seqrec.pipelines.evaluation.pipeline import SCORED_MODELS, TRAINED_MODELS

DATASET = "amazon-scientific"
# Score tables that hold several models: the few-shot sweep (conf/quick: 2 users) and the cross-domain
# models (conf/quick: trained on MovieLens-100K).
TABLES_OF_MODELS = {"dmpo_few_shot", "dmpo_transfer"}
TRANSFERRED = [f"{model}_from_ml-100k" for model in ("sft", "dmpo", "sdpo")]
# Written out here, not read from the pipelines: the evaluation stage derives its list, this checks it.
TRAINED = {"sasrec", "sasrec_text", "ra_rec", "laser", "laser_no_moe", "laser_no_prefix", "laser_no_stage1", "fusion",
           "fusion_dmpo", "fusion_no_summary", "fusion_no_aligned_ids", "fusion_no_prefix", "trsr", "trsr_no_summary", "sft", "dmpo",
           "sdpo", "dmpo_few_shot", "dmpo_transfer"}


def test_the_evaluation_stage_finds_every_model():
    assert set(SCORED_MODELS) == TRAINED | {"pop", "llm_zeroshot"} and set(TRAINED_MODELS) == TRAINED


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, amazon_sample):
    project = make_kedro_project(tmp_path_factory.mktemp("e2e"))
    # The notebook and kedro-viz start Kedro without --params: the data set goes in the conf env.
    (project / "conf" / "quick" / "globals.yml").write_text(f"dataset: {DATASET}\n")
    dataset = csv_params(amazon_sample, DATASET)["dataset"]
    (project / "conf" / "quick" / "parameters_dataset.yml").write_text(
        "dataset:\n" + "".join(f"  {key}: {value}\n" for key, value in dataset.items())
    )
    run_kedro(project, ["full"], {"tracking": {"mlflow": True}})  # every model, the ablations too
    return project


@pytest.mark.slow
def test_every_model_reaches_metrics(finished_run):
    metrics = pd.read_csv(finished_run / "data" / "08_reporting" / "metrics.csv")
    assert set(metrics["model"]) == (TRAINED | {"pop", "llm_zeroshot"}) - TABLES_OF_MODELS | {"dmpo_u2", *TRANSFERRED}
    assert set(metrics["dataset"]) == {DATASET}
    assert metrics["value"].between(0, 1).all()
    report = (finished_run / "data" / "08_reporting" / "metrics.md").read_text()
    for model in set(metrics["model"]):
        assert f"| {model} |" in report


@pytest.mark.slow
def test_the_report_holds_every_trained_models_cost(finished_run):
    cost = pd.read_csv(finished_run / "data" / "08_reporting" / "training_cost.csv")
    trained = TRAINED - TABLES_OF_MODELS | {"sft_u2", "dmpo_u2", *TRANSFERRED}
    assert set(cost["model"]) == trained and set(cost["dataset"]) == {DATASET}
    assert (cost["trainable_parameters"] > 0).all() and (cost["minutes"] > 0).all() and (cost["peak_rss_mb"] > 100).all()
    report = (finished_run / "data" / "08_reporting" / "metrics.md").read_text().split(f"## {DATASET}: training cost")[1]
    assert all(f"| {model} |" in report for model in trained)


@pytest.mark.slow
def test_the_mlflow_store_holds_one_nested_run_per_trained_model(finished_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(finished_run / "mlruns").as_uri())
    runs = client.search_runs([client.get_experiment_by_name("llm_seqrec").experiment_id])
    parents = [run for run in runs if "model" not in run.data.tags]
    assert len(parents) == 1 and parents[0].info.run_name == "full"
    models = sorted(run.data.tags["model"] for run in runs if run not in parents)
    assert models == sorted(TRAINED - TABLES_OF_MODELS | {"sft_u2", "dmpo_u2", *TRANSFERRED})
    assert all(run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for run in runs if run not in parents)
    assert all("loss" in run.data.metrics and "train_minutes" in run.data.metrics for run in runs if run not in parents)


@pytest.mark.slow
def test_one_stage_reruns_alone_from_persisted_inputs(finished_run):
    before = pd.read_csv(finished_run / "data" / "08_reporting" / "metrics.csv")
    run_kedro(finished_run, ["evaluation"])
    after = pd.read_csv(finished_run / "data" / "08_reporting" / "metrics.csv")
    pd.testing.assert_frame_equal(before, after)


@pytest.mark.slow
def test_notebook_runs_headless(finished_run):
    notebook = nbformat.read(REPO / "notebooks" / "explore_results.ipynb", as_version=4)
    env = {**os.environ, "KEDRO_ENV": "quick", "KEDRO_DISABLE_TELEMETRY": "true"}
    (finished_run / "notebooks").mkdir(exist_ok=True)
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(finished_run / "notebooks")}}
    )
    client.execute(env=env)
    text = "\n".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )
    assert "summaries;" in text and "data sets:" in text


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# Flags for a machine with no network beyond loopback: without the background-networking ones,
# Chromium keeps trying to reach Google's hosts.
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                  "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1600,1000"]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # one line per request would flood the test output
        pass


@pytest.mark.slow
def test_kedro_viz_build_shows_the_stages_in_chromium(finished_run):
    """``kedro viz build``, served on 127.0.0.1 and loaded in headless Chromium: the pipeline menu lists
    the six stages, the summary cache and aligned embeddings are on the page; a screenshot is kept."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    env = {**os.environ, "KEDRO_ENV": "quick", "KEDRO_DISABLE_TELEMETRY": "true"}
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "viz", "build"], cwd=finished_run, env=env, capture_output=True, text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    site = finished_run / "build"
    assert (site / "index.html").is_file()
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.fail("Debian's chromium and chromium-driver are not installed: run `make browser` (part of `make test`)")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=site))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get(f"http://127.0.0.1:{server.server_port}/")
        wait = WebDriverWait(driver, 120)
        label = wait.until(lambda d: d.find_elements(
            "xpath", "//button[contains(@class,'dropdown__label')][contains(., '__default__')]"
        ))[0]
        wait.until(lambda d: "aligned_item_embeddings" in d.find_element("tag name", "body").text)
        body = driver.find_element("tag name", "body").text
        assert "summary_cache" in body and "aligned_item_embeddings" in body
        driver.save_screenshot(str(finished_run / "kedro_viz.png"))
        driver.execute_script("arguments[0].click()", label)  # open the pipeline menu
        options_shown = wait.until(lambda d: [o.get_attribute("textContent")
                                              for o in d.find_elements("css selector", ".dropdown__options .menu-option")])
    finally:
        driver.quit()
        server.shutdown()
    stages = {"data_processing", "id_pretraining", "summarization", "alignment", "bituning", "evaluation"}
    assert stages <= set(options_shown), options_shown
    assert (finished_run / "kedro_viz.png").stat().st_size > 10_000
