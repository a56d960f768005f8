"""Interruption, with a real signal: ``kedro run`` is SIGKILLed mid-way through summarisation and
through SASRec training, then run again. The finished work (summary cache parts, the training
checkpoint) is kept, nothing is done or written twice, and the outputs equal an uninterrupted run's.
Both runs of each pair are separate processes with the same seed, so this is also the CPU determinism
check for SASRec and for the LLM summaries."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import csv_params, finish, kedro_run, layer_path, run_kedro

from llm_seqrec.datasets.summary_cache import SummaryCache

pytestmark = pytest.mark.slow


def kill_when(process: subprocess.Popen, ready: Callable[[], bool], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            pytest.fail("the run ended before it could be interrupted:\n" + process.stdout.read()[-3000:])
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail("the run never reached the point to interrupt")
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


@pytest.fixture
def project(kedro_project, amazon_sample) -> Path:
    run_kedro(kedro_project, ["data_processing"], csv_params(amazon_sample))
    return kedro_project


def test_killed_sasrec_training_resumes_from_its_checkpoint_and_ends_like_an_uninterrupted_run(project, amazon_sample, tmp_path):
    params = csv_params(amazon_sample)
    budget = ["sasrec.training.epochs=8", "sasrec.training.patience=8"]
    checkpoints = tmp_path / "checkpoints"
    checkpoint = checkpoints / "sasrec.pt"
    models = layer_path(project, "06_models", "sasrec")

    process = kedro_run(project, "id_pretraining", params, [*budget, f"sasrec.training.checkpoint_dir={checkpoints}"])
    kill_when(process, checkpoint.exists)
    killed_at = torch.load(checkpoint, weights_only=False)["epoch"]
    assert 1 <= killed_at < 8
    assert not models.exists() or not any(models.iterdir())  # killed before the model was saved: no half version

    output = finish(kedro_run(project, "id_pretraining", params, [*budget, f"sasrec.training.checkpoint_dir={checkpoints}"]))
    assert "resuming from" in output
    resumed_scores = pd.read_parquet(layer_path(project, "07_model_output", "sasrec_scores.parquet"))
    resumed_log = pd.read_parquet(layer_path(project, "08_reporting", "sasrec_training_log.parquet"))
    assert resumed_log["epoch"].tolist() == list(range(1, 9))  # every epoch once, none repeated

    finish(kedro_run(project, "id_pretraining", params, [*budget, f"sasrec.training.checkpoint_dir={tmp_path / 'fresh'}"]))
    fresh_scores = pd.read_parquet(layer_path(project, "07_model_output", "sasrec_scores.parquet"))
    fresh_log = pd.read_parquet(layer_path(project, "08_reporting", "sasrec_training_log.parquet"))
    pd.testing.assert_frame_equal(resumed_scores, fresh_scores)
    measured = ["seconds", "peak_rss_mb"]  # differ between runs
    pd.testing.assert_frame_equal(resumed_log.drop(columns=measured), fresh_log.drop(columns=measured))
    assert len(list(models.iterdir())) == 2  # two runs to the end, two versions


def test_killed_summarisation_keeps_its_finished_parts_and_ends_like_an_uninterrupted_run(project, amazon_sample):
    params = csv_params(amazon_sample)
    folder = layer_path(project, "04_feature", "summary_cache")
    # float32, pinned: resumed and fresh runs batch different prompts together, and only float32 gives
    # the same greedy text whatever the batch (bf16: tests/llm/test_bfloat16.py).
    small_chunks = ["summarization.chunk_size=2", "backbone.dtype=float32"]

    process = kedro_run(project, "summarization", params, small_chunks)
    kill_when(process, lambda: len(list(folder.glob("part-*.parquet"))) >= 2)
    kept = SummaryCache(folder).to_frame()
    kept_parts = {path.name: path.read_bytes() for path in folder.glob("part-*.parquet")}
    assert len(kept) >= 2
    assert not layer_path(project, "04_feature", "user_summaries.parquet").exists()

    finish(kedro_run(project, "summarization", params, small_chunks))
    cache = SummaryCache(folder).to_frame()
    assert cache["key"].is_unique and len(cache) > len(kept)
    assert all(folder.joinpath(name).read_bytes() == data for name, data in kept_parts.items())  # untouched
    resumed = pd.read_parquet(layer_path(project, "04_feature", "user_summaries.parquet"))

    shutil.rmtree(folder)
    finish(kedro_run(project, "summarization", params, small_chunks))
    fresh = SummaryCache(folder).to_frame()
    assert set(fresh["key"]) == set(cache["key"])
    pd.testing.assert_frame_equal(resumed, pd.read_parquet(layer_path(project, "04_feature", "user_summaries.parquet")))
