"""The laser variant of the bituning stage: its parameters, and the pipeline end to end (the training
procedures' own tests are Kedro-free, in tests/training/test_bituning.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import AUTO_DTYPE, csv_params, layer_path, run_kedro

from llm_seqrec.data.schema import SCORE_COLUMNS
from llm_seqrec.evaluation.protocol import evaluation_user_sets, llm_user_sample, metrics_table
from llm_seqrec.params import FusionParams, LaserParams, ProjectParams
from llm_seqrec.pipelines.bituning.laser.pipeline import MODELS

SAMPLE = 8  # conf/quick: evaluation.llm_user_sample


# ---------------------------------------------------------------- the parameters of a family
def test_ablation_parameters_are_validated_up_front():
    params = LaserParams()
    assert params.model("laser_no_moe").mformer.n_experts == 1
    assert params.model("laser_no_prefix").prefix is False
    assert params.model("laser_no_stage1").stage1_epochs == 0
    with pytest.raises(ValueError, match="lacks"):
        LaserParams.model_validate({"ablations": {"laser_no_moe": {}}})
    with pytest.raises(ValueError, match="laser.ablations.laser_no_moe"):
        LaserParams.model_validate({"ablations": {**params.ablations, "laser_no_moe": {"mformer": {"n_experts": 1, "top_k": 2}}}})
    with pytest.raises(ValueError, match=r"unknown models \['laser_no_mo'\]"):
        LaserParams.model_validate({"ablations": {**params.ablations, "laser_no_mo": {}}})


def test_the_fusion_ladder_switches_off_one_part_per_ablation():
    fusion = FusionParams()
    parts = {
        name: (model.use_summary, model.prompts.aligned_id_tokens, model.prefix)
        for name in FusionParams.models() for model in [fusion.model(name)]
    }
    assert parts == {
        "fusion": (True, True, True),
        "fusion_no_summary": (False, True, True),
        "fusion_no_aligned_ids": (True, False, True),
        "fusion_no_prefix": (True, True, False),
    }
    # fusion_dmpo tunes the trained fusion model: its architecture is fusion's.
    assert fusion.model("fusion_dmpo") == fusion.model("fusion")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"laser": {"mformer": {"hidden_size": 4}}}, r"laser\.mformer\.hidden_size\s+Input should be greater than or equal to 8"),
        ({"laser": {"mformer": {"top_k": 9}}}, r"laser\.mformer\s+Value error, mformer\.top_k=9 must lie in 1\.\.mformer\.n_experts=8"),
        ({"laser": {"prompts": {"item_intro": ""}}}, r"laser\.prompts\.item_intro\s+String should have at least 1 character"),
        ({"fusion": {"prompts": {"max_history": 3}}}, r"fusion\.prompts\.max_history\s+Unexpected keyword argument"),
        ({"fusion": {"preference": {"negatives": 0}}}, r"fusion\.preference\.negatives\s+Input should be greater than or equal to 1"),
        ({"fusion": {"preference": {"loss": "dpo"}}}, r"fusion\.preference\.loss\s+Input should be 'dmpo' or 'sdpo'"),
    ],
)
def test_the_library_settings_are_validated_as_parameters_naming_the_key(section, message):
    # The settings are the library's dataclasses (models.mformer, models.bituning_prompts,
    # training.bituning), validated in place with the key path of the parameters.
    with pytest.raises(ValueError, match=message):
        ProjectParams.model_validate(section)


def test_fusion_prompts_default_to_aligned_id_tokens_and_merge_key_by_key():
    fusion = FusionParams.model_validate({"prompts": {"max_history_items": 3}})
    assert fusion.prompts.aligned_id_tokens is False  # a given section replaces the default, as before
    assert FusionParams().prompts.aligned_id_tokens is True
    assert FusionParams().model("fusion_no_aligned_ids").prompts.aligned_id_tokens is False


# ---------------------------------------------------------------- the pipeline, end to end
def project_catalog(project: Path, params: dict):
    """The project copy's catalog under ``params`` (files are found as the pipelines find them)."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    cwd = os.getcwd()
    os.chdir(project)  # the catalog's relative paths resolve against the project
    try:
        with KedroSession.create(project_path=project, env="quick", runtime_params=params) as session:
            return session.load_context().catalog
    finally:
        os.chdir(cwd)


def test_missing_upstream_names_the_pipelines_to_run(kedro_project):
    with pytest.raises(FileNotFoundError) as error:
        run_kedro(kedro_project, ["bituning"], namespaces=["laser"])
    message = str(error.value)
    assert "user_sequences: run `kedro run --pipelines=data_processing` first" in message
    assert "sasrec_model: run `kedro run --pipelines=id_pretraining` first" in message
    assert "user_summaries: run `kedro run --pipelines=summarization` first" in message
    assert "aligned_item_embeddings: run `kedro run --pipelines=alignment` first" in message


@pytest.mark.slow
def test_laser_pipeline_end_to_end(kedro_project, amazon_sample):
    # 24 users touch ~150 items, so a catalogue pass of the real backbone takes seconds.
    params = {**csv_params(amazon_sample), "data_processing": {"max_users": 24}}
    run_kedro(kedro_project, ["data_processing", "id_pretraining"], params=params)
    catalog = project_catalog(kedro_project, params)
    sequences = catalog.load("user_sequences")
    n_items = len(catalog.load("item_catalog"))
    # Summaries and aligned item embeddings stand in for the summarization and alignment stages'
    # outputs; laser_no_prefix puts summaries in its prompts, laser_no_stage1 aligned ID tokens.
    catalog.save("user_summaries", pd.DataFrame([
        (int(u), cutoff, "hierarchical", f"User {u} likes lab supplies.", f"k{u}{cutoff}")
        for u in sequences["user_idx"] for cutoff in ("train", "valid", "test")
    ], columns=["user_idx", "cutoff", "method", "summary", "key"]))
    rng = np.random.default_rng(0)
    catalog.save("aligned_item_embeddings", pd.DataFrame({
        "item_idx": np.arange(1, n_items + 1), "item_id": [str(i) for i in range(n_items)], "title": "t",
        "embedding": list((rng.standard_normal((n_items, 576)) * 0.05).astype(np.float32)),
    }))
    params["laser"] = {"ablations": {
        **LaserParams().ablations,
        "laser_no_prefix": {"prefix": False, "use_summary": True},
        "laser_no_stage1": {"stage1_epochs": 0, "prompts": {"aligned_id_tokens": True}},
    }}

    run_kedro(kedro_project, ["bituning"], params=params, namespaces=["laser"])

    catalog = project_catalog(kedro_project, params)
    sample = llm_user_sample(sequences, SAMPLE, seed=42)
    adapters, tables = {}, {}
    for model in MODELS:
        adapters[model] = adapter = catalog.load(f"{model}_adapter")
        # Only the trained weights: M-Former, virtual tokens, projections; no LLM or SASRec tensor.
        state = adapter["state_dict"]
        assert {k.split(".")[0] for k in state} <= {"mformer", "user_suffix", "item_suffix", "user_projection", "item_projection"}
        assert sum(t.numel() for t in state.values()) < 1_000_000
        log = catalog.load(f"{model}_training_log")
        assert log["stage"].tolist() == ([2, 2] if model == "laser_no_stage1" else [1, 2])
        # Stage 1 trains every saved weight; stage 2 freezes the item side.
        stages = log.groupby("stage")["trainable_parameters"].max()
        assert (log["model"] == model).all() and stages.max() <= sum(t.numel() for t in state.values())
        if model != "laser_no_stage1":
            assert stages[1] == sum(t.numel() for t in state.values()) > stages[2]

        tables[model] = scores = catalog.load(f"{model}_scores")
        assert list(scores.columns) == [*SCORE_COLUMNS, "backbone_dtype"] and set(scores["backbone_dtype"]) == {AUTO_DTYPE}
        groups = scores.groupby(["protocol", "split"])["user_idx"].agg(sorted)
        assert sorted(groups.index) == [("full", "test"), ("full", "valid"), ("sampled", "test"), ("sampled", "valid")]
        assert all(users == sample.tolist() for users in groups)
        full, sampled = scores[scores["protocol"] == "full"], scores[scores["protocol"] == "sampled"]
        # evaluation.exclude_seen: each user's input items leave the ranking, the target never does.
        assert full["n_ranked"].between(2, n_items - 1).all() and full["top_items"].map(len).eq(20).all()
        assert full["rank"].between(0, n_items - 1).all()
        assert sampled["n_ranked"].eq(21).all()
        assert all(np.isfinite(s).all() and len(s) == 21 for s in sampled["candidate_scores"])

    configs = {model: adapter["config"] for model, adapter in adapters.items()}
    assert [m for m in MODELS if configs[m]["use_summary"]] == ["laser_no_prefix"]
    assert [m for m in MODELS if configs[m]["aligned_items"]] == ["laser_no_stage1"]
    assert configs["laser_no_prefix"]["model"]["mformer"] is None and configs["laser_no_prefix"]["id_model"] is None
    assert adapters["laser_no_moe"]["state_dict"]["mformer.queries"].shape[0] == 1

    metrics = metrics_table(tables, "amazon-scientific", [10, 100], evaluation_user_sets(sequences, SAMPLE, 42))
    assert set(metrics["model"]) == set(MODELS) and set(metrics["users"]) == {f"sample{SAMPLE}"}
    assert {"hr@10", "ndcg@10", "hr@100"} <= set(metrics["metric"])

    # Scoring again from the saved adapter reproduces the scores exactly (the score cache cleared, so it scores).
    shutil.rmtree(layer_path(kedro_project, "07_model_output", "score_cache"))
    run_kedro(kedro_project, ["bituning"], params=params, node_names=["laser.score_laser"])
    pd.testing.assert_frame_equal(catalog.load("laser_scores"), tables["laser"])

    # Determinism: training again with the same seed gives the same model, so the same metrics.
    run_kedro(kedro_project, ["bituning"], params=params, node_names=["laser.train_laser", "laser.score_laser"])
    again = catalog.load("laser_scores")
    pd.testing.assert_frame_equal(again, tables["laser"])
    pd.testing.assert_frame_equal(
        metrics_table({"laser": again}, "amazon-scientific", [10, 100], evaluation_user_sets(sequences, SAMPLE, 42)),
        metrics[metrics["model"] == "laser"].reset_index(drop=True),
    )
