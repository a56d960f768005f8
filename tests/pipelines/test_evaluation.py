"""The evaluation stage end to end on 300 real Amazon users, after the stages it reads from."""

import logging

import numpy as np
import pandas as pd
import pytest
from conftest import AUTO_DTYPE, csv_params, run_kedro

from llm_seqrec.data.schema import SCORE_COLUMNS
from llm_seqrec.evaluation.protocol import METRIC_COLUMNS, llm_user_sample

SAMPLE = 4  # users the frozen LLM scores here (conf/quick has 8)


@pytest.mark.slow
def test_evaluation_pipeline(kedro_project, amazon_sample):
    # Few users and short item titles keep the frozen LLM's work small on a shared CPU. A runtime
    # section replaces the configured one whole; the rest comes from params.py's defaults.
    params = {
        **csv_params(amazon_sample),
        "backbone": {"max_item_chars": 48},
        "evaluation": {"llm_user_sample": SAMPLE, "zeroshot_recent_items": 5, "progress": False},
    }
    run_kedro(kedro_project, ["data_processing", "id_pretraining", "evaluation"], params=params)
    data = kedro_project / "data"

    sequences = pd.read_parquet(data / "03_primary" / "amazon-scientific" / "user_sequences.parquet")
    zeroshot = pd.read_parquet(data / "07_model_output" / "amazon-scientific" / "llm_zeroshot_scores.parquet")
    assert list(zeroshot.columns) == [*SCORE_COLUMNS, "backbone_dtype"] and set(zeroshot["backbone_dtype"]) == {AUTO_DTYPE}
    assert set(zeroshot["protocol"]) == {"sampled"} and sorted(set(zeroshot["split"])) == ["test", "valid"]
    sample = llm_user_sample(sequences, SAMPLE, seed=42)
    assert sorted(set(zeroshot["user_idx"])) == sample.tolist() and len(zeroshot) == 2 * SAMPLE
    assert all(np.isfinite(s).all() and len(s) == n for s, n in zip(zeroshot["candidate_scores"], zeroshot["n_ranked"]))

    pop = pd.read_parquet(data / "07_model_output" / "amazon-scientific" / "pop_scores.parquet")
    assert len(pop) == 2 * 2 * len(sequences)  # both protocols, both splits, every user

    metrics = pd.read_csv(data / "08_reporting" / "metrics.csv")
    assert list(metrics.columns) == METRIC_COLUMNS
    assert set(metrics["dataset"]) == {"amazon-scientific"}
    assert set(metrics["model"]) == {"pop", "sasrec", "sasrec_text", "llm_zeroshot"}
    assert (metrics["metric"] == metrics["metric"].str.lower()).all()
    assert metrics["value"].between(0, 1).all()
    users = metrics.groupby("model")["users"].agg(set).to_dict()
    full_rankers = {"all", f"sample{SAMPLE}", "cold_items"}  # every user, the LLM sample, the cold-item slice
    assert users == {"pop": full_rankers, "sasrec": full_rankers, "sasrec_text": full_rankers,
                     "llm_zeroshot": {f"sample{SAMPLE}"}}
    cold = metrics[metrics["users"] == "cold_items"]
    assert set(cold["protocol"]) == {"full"} and set(cold["split"]) == {"test"}
    assert 0 < cold["n_users"].iloc[0] < len(sequences)
    on_sample = metrics[metrics["users"] == f"sample{SAMPLE}"]
    assert set(on_sample["n_users"]) == {SAMPLE}
    sampled_test = on_sample[(on_sample["protocol"] == "sampled") & (on_sample["split"] == "test")]
    assert set(sampled_test["model"]) == {"pop", "sasrec", "sasrec_text", "llm_zeroshot"}
    assert set(metrics.loc[metrics["users"] == "all", "n_users"]) == {len(sequences)}
    dtypes = metrics.groupby("model")["backbone_dtype"].agg(lambda d: set(d.fillna(""))).to_dict()
    assert dtypes == {"pop": {""}, "sasrec": {""}, "sasrec_text": {""}, "llm_zeroshot": {AUTO_DTYPE}}  # only the LLM row has one

    table = (data / "08_reporting" / "metrics.md").read_text()
    assert "## amazon-scientific · sampled ranking · test split · seeded user sample" in table
    assert (data / "08_reporting" / "metrics.png").stat().st_size > 0
    assert metrics["std_error"].notna().all() and (metrics["std_error"] >= 0).all()
    paired = pd.read_csv(data / "08_reporting" / "paired_tests.csv")
    assert set(paired["baseline"]) == {"sasrec"} and set(paired["model"]) == {"pop", "sasrec_text", "llm_zeroshot"}
    assert paired["p_value"].between(0, 1).all() and "paired tests" in table
    assert (data / "08_reporting" / "amazon-scientific" / "learning_curves.png").stat().st_size > 0
    assert (data / "08_reporting" / "metrics.html").read_text().count("<h2>") == table.count("\n## ")


    examples = (data / "08_reporting" / "amazon-scientific" / "example_users.md").read_text()
    assert examples.count("\n## user ") == 3  # evaluation.example_users
    assert all(f"| {model} | {protocol} |" in examples
               for model, protocol in (("pop", "full"), ("sasrec", "full"), ("sasrec", "sampled"), ("llm_zeroshot", "sampled")))

    # Run again, the LLM scored on the test split only (the default run's evaluation.llm_splits): every score row
    # comes from the score cache, nothing is appended, and the report names the model without valid rows.
    cache = data / "07_model_output" / "amazon-scientific" / "score_cache"
    parts = sorted(cache.glob("part-*.parquet"))
    assert parts
    lines = []  # Kedro's logging setup does not propagate to pytest's caplog: a handler of our own
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())
    loggers = [logging.getLogger(f"llm_seqrec.{name}") for name in ("evaluation.scoring", "pipelines.evaluation.nodes")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        run_kedro(kedro_project, ["evaluation"], params={**params, "evaluation": {**params["evaluation"], "llm_splits": ["test"]}})
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    assert sorted(cache.glob("part-*.parquet")) == parts
    assert f"llm_zeroshot test: {SAMPLE} of {SAMPLE} rows from the score cache" in lines
    assert not [line for line in lines if line.startswith("llm_zeroshot valid")]
    assert f"popularity valid: {2 * len(sequences)} of {2 * len(sequences)} rows from the score cache" in lines
    assert "Scored on the test split only (evaluation.llm_splits=['test']), so no metrics on the other: llm_zeroshot" in lines
    pd.testing.assert_frame_equal(pd.read_parquet(data / "07_model_output" / "amazon-scientific" / "pop_scores.parquet"), pop)
    again = pd.read_parquet(data / "07_model_output" / "amazon-scientific" / "llm_zeroshot_scores.parquet")
    pd.testing.assert_frame_equal(again, zeroshot[zeroshot["split"] == "test"].reset_index(drop=True))
    valid_llm = (metrics["model"] == "llm_zeroshot") & (metrics["split"] == "valid")
    pd.testing.assert_frame_equal(pd.read_csv(data / "08_reporting" / "metrics.csv"), metrics[~valid_llm].reset_index(drop=True))
    assert "**Scored on the test split only** (`evaluation.llm_splits`)" in (data / "08_reporting" / "metrics.md").read_text()
