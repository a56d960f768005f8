"""The ``dmpo`` variant of the bituning stage: training examples, the SFT -> DMPO / S-DPO chain with
cached reference log-probs and the few-shot sweep end to end on real Amazon users, and cross-domain
training on MovieLens (the ``dmpo_transfer`` namespace) through configuration alone."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import AUTO_DTYPE, csv_params, layer_path, run_kedro
from kedro.io.core import Version

from llm_seqrec.data.fingerprint import weights_fingerprint
from llm_seqrec.data.schema import SCORE_COLUMNS
from llm_seqrec.datasets import PeftAdapterDataset
from llm_seqrec.evaluation.protocol import evaluation_user_sets, llm_user_sample, metrics_table
from llm_seqrec.pipelines.bituning.dmpo.nodes import collect_models, make_training_examples
from llm_seqrec.training.preference import EXAMPLE_COLUMNS

SAMPLE = 4
PARAMS = {"evaluation": {"llm_user_sample": SAMPLE}, "backbone": {"max_item_chars": 40}}
AMAZON = {"format": "csv", "name": "amazon-scientific", "interactions": "i.csv", "items": "t.csv"}  # not read


def synthetic_tables(n_users: int = 12, n_items: int = 40):
    rng = np.random.default_rng(0)
    sequences = pd.DataFrame({
        "user_idx": np.arange(1, n_users + 1),
        "user_id": [str(u) for u in range(1, n_users + 1)],
        "train_items": [rng.choice(np.arange(1, n_items + 1), size=2 + u % 4, replace=False).tolist() for u in range(n_users)],
        "valid_target": rng.integers(1, n_items + 1, n_users),
        "test_target": rng.integers(1, n_items + 1, n_users),
    })
    catalog = pd.DataFrame({"item_idx": np.arange(1, n_items + 1), "item_id": [str(i) for i in range(1, n_items + 1)],
                            "title": [f"item {i}" for i in range(1, n_items + 1)]})
    catalog["text"] = catalog["title"]
    summaries = pd.DataFrame({"user_idx": [3, 5, 9], "cutoff": ["train", "train", "valid"], "method": "hierarchical",
                              "summary": ["likes 3", "likes 5", "valid 9"], "key": "k"})
    return sequences, catalog, summaries


def test_training_examples_are_nested_with_fixed_negatives_outside_the_users_items():
    sequences, catalog, summaries = synthetic_tables()
    dmpo = {"train_users": 6, "few_shot_users": [2, 8], "recent_items": 2, "negatives": 3}
    examples, items = make_training_examples(sequences, catalog, summaries, dmpo, AMAZON, {}, {})
    assert list(examples.columns) == EXAMPLE_COLUMNS and len(examples) == 8  # the largest set
    assert set(examples["domain"]) == {"amazon-scientific"}
    # Summarised users first; a summary only from the train cutoff.
    assert set(examples["user_idx"][:2]) == {3, 5}
    assert dict(zip(examples["user_idx"][:2], examples["summary"][:2])) == {3: "likes 3", 5: "likes 5"}
    assert examples["summary"][2:].isna().all()
    train = sequences.set_index("user_idx")["train_items"]
    for user, history, target, negatives in examples[["user_idx", "history", "target", "negatives"]].itertuples(index=False):
        assert list(history) == list(train[user][:-1])[-2:] and target == train[user][-1]
        assert len(set(negatives)) == 3 and not set(negatives) & set(train[user])
    used = {i for h, t, n in zip(examples["history"], examples["target"], examples["negatives"]) for i in (*h, t, *n)}
    assert set(items["item_idx"]) == used and list(items.columns) == ["item_idx", "title"]
    # The same seed gives the same examples; fewer users give a prefix of them.
    fewer, _ = make_training_examples(sequences, catalog, summaries, {**dmpo, "few_shot_users": []}, AMAZON, {}, {})
    pd.testing.assert_frame_equal(fewer, examples.head(6))


def test_cross_domain_examples_come_from_the_configured_data_set():
    sequences, catalog, summaries = synthetic_tables()
    dmpo = {"train_users": 5, "train_dataset": {"format": "movielens", "name": "ml-100k"}}
    examples, items = make_training_examples(sequences, catalog, summaries, dmpo, AMAZON, {}, {})
    assert len(examples) == 5 and set(examples["domain"]) == {"ml-100k"}
    assert examples["summary"].isna().all()  # the summary cache belongs to the evaluated data set
    assert items["title"].str.contains(r"\(\d{4}\)").any()  # MovieLens titles carry the year
    with pytest.raises(ValueError, match="dmpo_transfer.train_dataset names the evaluated data set 'ml-100k'"):
        make_training_examples(sequences, catalog, summaries, dmpo, {"format": "movielens", "name": "ml-100k"}, {}, {})


def test_the_transfer_models_are_collected_into_one_table():
    scores = [pd.DataFrame({"model": [f"{m}_from_ml-100k"] * 2, "score": [0.1, 0.2]}) for m in ("sft", "dmpo", "sdpo")]
    logs = [pd.DataFrame({"model": [f"{m}_from_ml-100k"], "epoch": [1]}) for m in ("sft", "dmpo", "sdpo")]
    table, log = collect_models(*scores), collect_models(*logs)
    assert table["model"].tolist() == ["sft_from_ml-100k"] * 2 + ["dmpo_from_ml-100k"] * 2 + ["sdpo_from_ml-100k"] * 2
    assert log["model"].tolist() == ["sft_from_ml-100k", "dmpo_from_ml-100k", "sdpo_from_ml-100k"]


@pytest.mark.slow
def test_sft_then_dmpo_and_sdpo_from_cached_reference_logprobs(kedro_project, amazon_sample):
    params = {**csv_params(amazon_sample), **PARAMS}
    run_kedro(kedro_project, ["data_processing"], params)
    sequences = pd.read_parquet(layer_path(kedro_project, "03_primary", "user_sequences.parquet"))
    sample = llm_user_sample(sequences, SAMPLE, seed=42)
    # The summary cache exists for some users only: one training user, one evaluated user's test cutoff.
    eligible = sequences.loc[sequences["train_items"].map(len) >= 2, "user_idx"]
    pd.DataFrame(
        [(int(eligible.iloc[0]), "train", "Buys lab gloves."), (int(sample[0]), "test", "Buys lab gloves.")],
        columns=["user_idx", "cutoff", "summary"],
    ).assign(method="hierarchical", key="k")[["user_idx", "cutoff", "method", "summary", "key"]].to_parquet(
        summaries_path(kedro_project)
    )
    run_kedro(kedro_project, ["bituning"], params, namespaces=["dmpo"])

    examples = pd.read_parquet(layer_path(kedro_project, "05_model_input", "dmpo_training_examples.parquet"))
    assert len(examples) == 4 and examples["negatives"].map(len).eq(2).all()  # conf/quick: 4 users, k = 2
    assert examples["summary"].notna().sum() == 1

    tables = {}
    for model in ("sft", "dmpo", "sdpo"):
        scores = pd.read_parquet(layer_path(kedro_project, "07_model_output", f"{model}_scores.parquet"))
        assert list(scores.columns) == [*SCORE_COLUMNS, "backbone_dtype", "model"] and set(scores["model"]) == {model}
        assert set(scores["backbone_dtype"]) == {AUTO_DTYPE}
        assert sorted(set(scores["user_idx"])) == sample.tolist() and len(scores) == 2 * SAMPLE
        assert all(np.isfinite(s).all() and (s < 0).all() and len(s) == 21 for s in scores["candidate_scores"])
        tables[model] = scores.drop(columns="model")
    assert not np.allclose(np.stack(tables["dmpo"]["candidate_scores"]), np.stack(tables["sdpo"]["candidate_scores"]))

    models = layer_path(kedro_project, "06_models", "dmpo")
    sft, dmpo, sdpo = (load_adapter(models / name) for name in ("sft_adapter", "adapter", "sdpo_adapter"))
    reference = pd.read_parquet(models / "reference_logprobs.parquet")
    fingerprint = weights_fingerprint(sft["state_dict"])
    assert set(reference["sft_adapter"]) == {fingerprint} and len(reference) == 4
    assert reference["items"].map(list).tolist() == [[t, *n] for t, n in zip(examples["target"], examples["negatives"])]
    for config, loss in ((dmpo["config"], "dmpo"), (sdpo["config"], "sdpo")):
        assert config["head"] == "likelihood" and config["meta"]["loss"] == loss
        assert config["meta"]["reference"] == f"sft adapter {fingerprint}"

    few_shot = pd.read_parquet(layer_path(kedro_project, "07_model_output", "dmpo_few_shot_scores.parquet"))
    assert set(few_shot["model"]) == {"dmpo_u2"} and len(few_shot) == 2 * SAMPLE
    log = pd.read_parquet(layer_path(kedro_project, "08_reporting", "dmpo_few_shot_training_log.parquet"))
    assert set(log["model"]) == {"sft_u2", "dmpo_u2"}

    # The evaluation names rows by the `model` column: the sweep is one table, several models.
    tables.update({name: group.drop(columns="model") for name, group in few_shot.groupby("model")})
    metrics = metrics_table(tables, "amazon-scientific", [1, 5], evaluation_user_sets(sequences, SAMPLE, 42))
    test = metrics[(metrics["split"] == "test") & (metrics["metric"] == "auc")]
    assert set(test["model"]) == {"sft", "dmpo", "sdpo", "dmpo_u2"} and test["value"].between(0, 1).all()


def summaries_path(kedro_project):
    """Where the summarization stage's ``user_summaries`` goes; these tests write it themselves."""
    path = layer_path(kedro_project, "04_feature", "user_summaries.parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def load_adapter(folder) -> dict:
    latest = sorted(p.name for p in folder.iterdir())[-1]
    return PeftAdapterDataset(filepath=str(folder), version=Version(latest, None)).load()


@pytest.mark.slow
def test_cross_domain_training_through_configuration_alone(kedro_project, amazon_sample):
    params = {**csv_params(amazon_sample), **PARAMS}
    run_kedro(kedro_project, ["data_processing"], params)
    pd.DataFrame(columns=["user_idx", "cutoff", "method", "summary", "key"]).astype({"user_idx": "int64"}).to_parquet(
        summaries_path(kedro_project)
    )
    nodes = [f"dmpo_transfer.{name}" for name in ("make_training_examples", "train_sft", "score_sft")]
    run_kedro(kedro_project, ["bituning"], params, node_names=nodes)  # conf/quick: trained on MovieLens-100K
    scores = pd.read_parquet(layer_path(kedro_project, "07_model_output", "dmpo_transfer.sft_scores.parquet"))
    assert set(scores["model"]) == {"sft_from_ml-100k"} and len(scores) == 2 * SAMPLE
    folder = sorted((layer_path(kedro_project, "06_models", "dmpo_transfer") / "sft_adapter").iterdir())[-1] / "sft_adapter"
    config = json.loads((folder / "recommender.json").read_text())
    assert config["meta"]["domain"] == "ml-100k" and config["prompt"]["use_summary"] is False
