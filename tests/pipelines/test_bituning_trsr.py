"""The ``trsr`` variant of the bituning stage: LLM-TRSR and its no-summary ablation, end to end on
real Amazon users after data processing and summarisation, and its input checks."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import AUTO_DTYPE, csv_params, layer_path, run_kedro

from llm_seqrec.data.schema import SCORE_COLUMNS
from llm_seqrec.evaluation.protocol import evaluation_user_sets, llm_user_sample, metrics_table
from llm_seqrec.pipelines.bituning.trsr.nodes import train_trsr

SAMPLE = 4
# Few evaluated users and short titles keep the LLM's prompts small on CPU (nested: runtime params
# merge into the sections).
PARAMS = {"evaluation": {"llm_user_sample": SAMPLE}, "backbone": {"max_item_chars": 40}}


def adapter_folder(kedro_project, name: str):
    versions = sorted((layer_path(kedro_project, "06_models", "trsr") / name).iterdir())
    assert len(versions) == 1  # versioned: one timestamped folder per run
    return versions[0] / name


@pytest.mark.slow
def test_trsr_trains_saves_and_scores_with_and_without_the_summary(kedro_project, amazon_sample):
    params = {**csv_params(amazon_sample), **PARAMS}
    run_kedro(kedro_project, ["data_processing", "summarization"], params)
    run_kedro(kedro_project, ["bituning"], params, namespaces=["trsr"])
    sequences = pd.read_parquet(layer_path(kedro_project, "03_primary", "user_sequences.parquet"))
    sample = llm_user_sample(sequences, SAMPLE, seed=42)

    tables = {}
    for model in ("trsr", "trsr_no_summary"):
        scores = pd.read_parquet(layer_path(kedro_project, "07_model_output", f"{model}_scores.parquet"))
        assert list(scores.columns) == [*SCORE_COLUMNS, "backbone_dtype"] and set(scores["backbone_dtype"]) == {AUTO_DTYPE}
        assert set(scores["protocol"]) == {"sampled"} and sorted(set(scores["split"])) == ["test", "valid"]
        assert sorted(set(scores["user_idx"])) == sample.tolist() and len(scores) == 2 * SAMPLE
        for values, n in zip(scores["candidate_scores"], scores["n_ranked"], strict=True):
            assert len(values) == n == 21 and ((values > 0) & (values < 1)).all()  # p(Yes)
        tables[model] = scores
        log = pd.read_parquet(layer_path(kedro_project, "08_reporting", f"{model}_training_log.parquet"))
        assert len(log) == 1 and np.isfinite(log["loss"]).all() and log["metric"].notna().all()
    assert not np.allclose(np.stack(tables["trsr"]["candidate_scores"]), np.stack(tables["trsr_no_summary"]["candidate_scores"]))

    for name, use_summary in (("adapter", True), ("no_summary_adapter", False)):
        folder = adapter_folder(kedro_project, name)
        assert {p.name for p in folder.iterdir()} == {"adapter_config.json", "adapter_model.safetensors", "recommender.json"}
        config = json.loads((folder / "recommender.json").read_text())
        assert config["head"] == "yes_no" and config["prompt"]["use_summary"] is use_summary
        assert config["meta"]["train_users"] == 4  # conf/quick: summarization.train_users
        assert json.loads((folder / "adapter_config.json").read_text())["r"] == 8

    # Scoring again from the saved adapter reproduces the scores (the score cache cleared, so it scores).
    shutil.rmtree(layer_path(kedro_project, "07_model_output", "score_cache"))
    run_kedro(kedro_project, ["bituning"], params, node_names=["trsr.score_trsr"])
    again = pd.read_parquet(layer_path(kedro_project, "07_model_output", "trsr_scores.parquet"))
    np.testing.assert_allclose(np.stack(again["candidate_scores"]), np.stack(tables["trsr"]["candidate_scores"]), rtol=1e-6)

    # With and without the summary, side by side in the metrics.
    metrics = metrics_table(tables, "amazon-scientific", [1, 5], evaluation_user_sets(sequences, SAMPLE, 42))
    test = metrics[(metrics["split"] == "test") & (metrics["users"] == f"sample{SAMPLE}")]
    assert set(test["model"]) == {"trsr", "trsr_no_summary"}
    assert set(test["metric"]) == {"hr@1", "ndcg@5", "mrr", "auc"}


def synthetic(cutoffs: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    sequences = pd.DataFrame(
        {"user_idx": [1, 2], "user_id": ["a", "b"], "train_items": [[1, 2, 3], [2, 3, 4]], "valid_target": [4, 5], "test_target": [5, 6]}
    )
    catalog = pd.DataFrame({"item_idx": range(1, 9), "item_id": list("abcdefgh"), "title": list("ABCDEFGH")})
    catalog["text"] = catalog["title"]
    candidates = pd.DataFrame(
        [(u, s, [t, 7, 8]) for u, v, t2 in ((1, 4, 5), (2, 5, 6)) for s, t in (("valid", v), ("test", t2))],
        columns=["user_idx", "split", "candidates"],
    )
    summaries = pd.DataFrame(
        [(u, c, "hierarchical", f"summary {u} {c}", "k") for u in (1, 2) for c in cutoffs],
        columns=["user_idx", "cutoff", "method", "summary", "key"],
    )
    return sequences, catalog, summaries, candidates


@pytest.mark.parametrize(
    ("cutoffs", "message"),
    [(["valid", "test"], "no train-cutoff summaries"), (["train", "valid"], "run `kedro run --pipelines=summarization`")],
)
def test_missing_summaries_name_the_pipeline_to_run(cutoffs, message):
    sequences, catalog, summaries, candidates = synthetic(cutoffs)
    with pytest.raises(ValueError, match=message):
        train_trsr(sequences, catalog, summaries, candidates, {}, {"llm_user_sample": None}, {})
