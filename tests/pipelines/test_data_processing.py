"""The data_processing pipeline end to end, through Kedro's SequentialRunner, on real data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import csv_params, finish, kedro_run, run_kedro, write_dump

from llm_seqrec.data.schema import CANDIDATE_COLUMNS, INTERACTION_COLUMNS, ITEM_COLUMNS, SEQUENCE_COLUMNS, split_inputs
from llm_seqrec.data.validation import DataValidationError

pytestmark = pytest.mark.slow

OUTPUTS = {
    "interactions": "02_intermediate/{dataset}/interactions.parquet",
    "data_quality": "02_intermediate/{dataset}/data_quality.json",
    "item_catalog": "03_primary/{dataset}/item_catalog.parquet",
    "user_sequences": "03_primary/{dataset}/user_sequences.parquet",
    "eval_candidates": "05_model_input/{dataset}/eval_candidates.parquet",
}


def output_paths(kedro_project: Path, dataset: str = "amazon-scientific") -> dict[str, Path]:
    """Every output lives under its data set's own folder, so two data sets never overwrite each other."""
    return {name: kedro_project / "data" / path.format(dataset=dataset) for name, path in OUTPUTS.items()}


def load(kedro_project: Path, dataset: str = "amazon-scientific") -> dict:
    paths = output_paths(kedro_project, dataset)
    tables = {name: pd.read_parquet(path) for name, path in paths.items() if path.suffix == ".parquet"}
    return {**tables, "data_quality": json.loads(paths["data_quality"].read_text())}


def check_tables(out: dict, n_negatives: int = 20) -> None:
    """The contracts of schema.py, and what each table promises about the others."""
    inter, catalog, sequences, candidates = (
        out["interactions"], out["item_catalog"], out["user_sequences"], out["eval_candidates"]
    )
    assert list(inter.columns) == INTERACTION_COLUMNS and list(catalog.columns) == ITEM_COLUMNS
    assert list(sequences.columns) == SEQUENCE_COLUMNS and list(candidates.columns) == CANDIDATE_COLUMNS
    n_users, n_items = len(sequences), len(catalog)
    assert sequences["user_idx"].tolist() == list(range(1, n_users + 1))
    assert catalog["item_idx"].tolist() == list(range(1, n_items + 1))
    assert set(inter["item_idx"]) == set(range(1, n_items + 1))  # dense: no unreferenced item
    assert all(text.startswith(title) and title for text, title in zip(catalog["text"], catalog["title"], strict=True))
    quality = out["data_quality"]
    assert (quality["users"], quality["items"], quality["interactions"]) == (n_users, n_items, len(inter))

    histories = inter.groupby("user_idx")["item_idx"].agg(list)
    for split, held_out in (("valid", 2), ("test", 1)):
        inputs, targets = split_inputs(sequences, split)
        for user_idx, given, target in zip(sequences["user_idx"], inputs, targets, strict=True):
            history = histories[user_idx]
            assert given == history[: len(history) - held_out] and target == history[-held_out]

    assert len(candidates) == 2 * n_users
    merged = candidates.merge(sequences, on="user_idx")
    for row in merged.itertuples():
        items = np.asarray(row.candidates)
        assert items[0] == (row.valid_target if row.split == "valid" else row.test_target)
        assert len(items) == n_negatives + 1 and len(set(items[1:])) == n_negatives
        assert not set(items[1:]) & {*row.train_items, row.valid_target, row.test_target}


def test_amazon_sample_through_the_csv_reader(kedro_project, amazon_sample):
    run_kedro(kedro_project, ["data_processing"], csv_params(amazon_sample))
    out = load(kedro_project)
    check_tables(out)
    quality = out["data_quality"]
    assert quality["dataset"] == "amazon-scientific" and quality["format"] == "csv"
    assert quality["users"] == 300  # the sample's 300 users; conf/quick keeps at most 300
    raw = pd.read_csv(amazon_sample / "interactions.csv")
    assert quality["raw_interaction_rows"] == quality["interactions"] == len(raw)
    assert " | description: " in out["item_catalog"]["text"].iloc[0]


@pytest.mark.parametrize("fmt", ["amazon2018", "amazon2023"])
def test_amazon_dumps_as_published_give_the_tables_of_the_csv_files(kedro_project, amazon_sample, tmp_path, fmt):
    run_kedro(kedro_project, ["data_processing"], csv_params(amazon_sample))
    reviews, meta = write_dump(amazon_sample, tmp_path, fmt)
    run_kedro(kedro_project, ["data_processing"],
              {"dataset": {"format": fmt, "name": fmt, "interactions": str(reviews), "items": str(meta)}})
    expected, out = load(kedro_project), load(kedro_project, fmt)
    check_tables(out)
    for name in ("user_sequences", "item_catalog", "eval_candidates"):
        pd.testing.assert_frame_equal(out[name], expected[name])
    assert out["data_quality"]["format"] == fmt and out["data_quality"]["raw_interaction_rows"] == len(
        pd.read_csv(amazon_sample / "interactions.csv"))


def test_movielens_100k_with_a_user_sample(kedro_project):
    params = {"dataset": {"format": "movielens", "name": "ml-100k"}, "data_processing": {"max_users": 200}}
    run_kedro(kedro_project, ["data_processing"], params)
    out = load(kedro_project, "ml-100k")
    check_tables(out)
    quality = out["data_quality"]
    assert (quality["dataset"], quality["users"], quality["users_before_sampling"]) == ("ml-100k", 200, 943)
    assert quality["raw_interaction_rows"] == 100_000
    toy_story = out["item_catalog"].set_index("item_id").loc["1", "text"]
    assert toy_story == "Toy Story (1995) | genre: Animation Children's Comedy"


def test_a_bad_file_stops_the_run_before_any_output_is_written(kedro_project, amazon_sample, tmp_path):
    inter = pd.read_csv(amazon_sample / "interactions.csv", dtype=str)
    inter.loc[3, "timestamp"] = "soon"
    inter.to_csv(tmp_path / "interactions.csv", index=False)
    params = csv_params(amazon_sample)
    params["dataset"]["interactions"] = str(tmp_path / "interactions.csv")
    with pytest.raises(DataValidationError, match="line 5"):
        run_kedro(kedro_project, ["data_processing"], params)
    assert not any(path.exists() for path in output_paths(kedro_project).values())


def test_kedro_run_cli_with_dotted_params(kedro_project, amazon_sample):
    """The documented command line: ``kedro run --pipelines=data_processing --params=dataset.format=csv,...``."""
    finish(kedro_run(kedro_project, "data_processing", csv_params(amazon_sample, "x")))
    assert load(kedro_project, "x")["data_quality"]["dataset"] == "x"
