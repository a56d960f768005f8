"""The laser variant of the bituning stage: its two-stage schedule, and the pipeline end to end."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import AUTO_DTYPE, csv_params, run_kedro
from transformers import LlamaConfig, LlamaForCausalLM

from llm_seqrec.data.schema import SCORE_COLUMNS
from llm_seqrec.evaluation.protocol import evaluation_user_sets, llm_user_sample, metrics_table
from llm_seqrec.models.bituning import BiTuning, BiTuningConfig
from llm_seqrec.models.mformer import MFormerConfig
from llm_seqrec.models.sasrec import SASRec, SASRecConfig
from llm_seqrec.params import FusionParams, LaserParams
from llm_seqrec.pipelines.bituning.laser import MODELS, UserSet, fit_preference, fit_stages, preference_candidates

SAMPLE = 8  # conf/quick: evaluation.llm_user_sample
N_ITEMS = 10


# ---------------------------------------------------------------- the two stages, on a tiny model
def tiny_laser() -> BiTuning:
    torch.manual_seed(0)  # as the node seeds before building: the same start, so checkpoints match
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128))
    config = BiTuningConfig(
        n_items=N_ITEMS, llm_hidden_size=32, backbone="tiny", rec_size=8,
        mformer=MFormerConfig(id_size=16, output_size=32, hidden_size=16, n_experts=2, n_query_tokens=2, num_heads=2),
    )
    items = [[]] + [[1 + i, 20 + i, 40 + i] for i in range(N_ITEMS)]
    return BiTuning(config, llm.eval().requires_grad_(False), items,
                    SASRec(SASRecConfig(n_items=N_ITEMS, max_len=6, hidden_size=16)))


def user_set(n: int) -> UserSet:
    rng = np.random.default_rng(0)
    histories = [rng.integers(1, N_ITEMS + 1, size=3).tolist() for _ in range(n)]
    frame = pd.DataFrame({
        "user_idx": np.arange(1, n + 1, dtype=np.int64), "user_id": [str(u) for u in range(n)],
        "train_items": histories, "valid_target": rng.integers(1, N_ITEMS + 1, size=n),
        "test_target": rng.integers(1, N_ITEMS + 1, size=n),
    })
    prompts = [[2 + h[0], 3 + h[1], 4 + h[2]] for h in histories]
    return UserSet(frame, prompts, histories, frame["valid_target"].astype(int).tolist())


def schedule_params(tmp_path: Path | None = None, **overrides) -> "LaserParams":
    training = {"epochs": 3, "batch_size": 2, "eval_users": None, "progress": False, "device": "cpu",
                "checkpoint_dir": str(tmp_path) if tmp_path else None}
    return LaserParams.model_validate({"train_users": None, "stage1_epochs": 1, "training": training, **overrides}).model("laser")


def test_stage2_reuses_the_cached_item_encodings(monkeypatch):
    net = tiny_laser()
    calls = {1: 0, 2: 0}
    original = net.encode_items

    def counting(ids):
        calls[1 if net.item_suffix.requires_grad else 2] += 1
        return original(ids)

    monkeypatch.setattr(net, "encode_items", counting)
    log = fit_stages(net, "laser", user_set(6), user_set(4), schedule_params(), exclude_seen=False)

    assert log["stage"].tolist() == [1, 2, 2] and log["epoch"].tolist() == [1, 1, 2]
    assert log["metric"].notna().all()
    assert calls[1] > 0  # stage 1: catalogue passes and the batches' targets
    # Stage 2 starts from the encodings stage 1's last validation made with the same weights, and
    # never re-encodes: the item side is frozen.
    assert calls[2] == 0
    assert not net.item_suffix.requires_grad


def test_a_finished_schedule_resumes_from_its_checkpoints_without_training(tmp_path, monkeypatch):
    params = schedule_params(tmp_path)
    first = tiny_laser()
    log = fit_stages(first, "laser", user_set(6), user_set(4), params, exclude_seen=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["laser_stage1.pt", "laser_stage2.pt"]

    again = tiny_laser()
    monkeypatch.setattr(again, "loss", lambda **_: pytest.fail("a finished run trained again"))
    # The checkpoints hold the history, its seconds and memory included.
    pd.testing.assert_frame_equal(fit_stages(again, "laser", user_set(6), user_set(4), params, exclude_seen=False), log)
    for key, value in first.state_dict().items():
        assert torch.equal(again.state_dict()[key], value)


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


def test_preference_candidates_are_the_target_then_items_the_user_never_touched():
    users = user_set(6)
    candidates = preference_candidates(users, N_ITEMS, 3, seed=1)
    assert candidates.shape == (6, 4)
    assert candidates[:, 0].tolist() == users.targets
    for row, (_, user) in zip(candidates.tolist(), users.frame.iterrows(), strict=True):
        touched = {*user["train_items"], user["valid_target"], user["test_target"]}
        assert len(set(row[1:])) == 3 and not set(row[1:]) & touched
    assert torch.equal(preference_candidates(users, N_ITEMS, 3, seed=1), candidates)


def test_preference_tuning_trains_the_user_side_against_a_fixed_reference_and_resumes(tmp_path, monkeypatch):
    net = tiny_laser()
    fit_stages(net, "fusion", user_set(6), user_set(4), schedule_params(), exclude_seen=False)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    preference = FusionParams.model_validate({"preference": {"train_users": None, "training": {
        "epochs": 2, "batch_size": 2, "lr": 0.01, "progress": False, "device": "cpu", "checkpoint_dir": str(tmp_path)}}}).preference
    references = []
    original = BiTuning.preference_loss

    def recording(self, prompt, length, candidates, reference, *args, **kwargs):
        references.append(reference.clone())
        return original(self, prompt, length, candidates, reference, *args, **kwargs)

    monkeypatch.setattr(BiTuning, "preference_loss", recording)
    log = fit_preference(net, "fusion_dmpo", user_set(6), user_set(4), schedule_params(), preference, exclude_seen=False)

    assert log["stage"].tolist() == [3, 3] and log["epoch"].tolist() == [1, 2] and log["metric"].notna().all()
    assert {k for k, v in net.state_dict().items() if not torch.equal(v, start[k])} >= {"user_suffix"}
    for key in ("item_suffix", "item_projection.weight"):
        assert torch.equal(net.state_dict()[key], start[key])
    # The reference is the starting model's logits, the same tensor rows in every epoch.
    tuned_state = {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(start)
    net.eval()
    users = user_set(6)
    expected = net.score_candidates(users.prompts, users.histories, preference_candidates(users, N_ITEMS, 3, 42), 8)
    seen = torch.cat(references)
    assert len(seen) == 2 * 6 and all(any(torch.equal(row, e) for e in expected) for row in seen)

    # A finished run resumes from its checkpoint without a step.
    monkeypatch.setattr(BiTuning, "preference_loss", lambda *a, **k: pytest.fail("a finished run trained again"))
    again = fit_preference(net, "fusion_dmpo", user_set(6), user_set(4), schedule_params(), preference, exclude_seen=False)
    pd.testing.assert_frame_equal(again, log)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in tuned_state.items())


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

    # Scoring again from the saved adapter reproduces the scores exactly.
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
