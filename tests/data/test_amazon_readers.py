"""The Amazon review dumps as published (amazon2018, amazon2023), written by the tests from the shared
Amazon sample (the same users, items and histories), read into the same tables as the sample's CSV files;
and every bad input of those formats with its message."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pandas as pd
import pytest
from conftest import START, sample_tables, write_dump, write_lines

from llm_seqrec.data import amazon
from llm_seqrec.data.amazon import read_amazon_dataset
from llm_seqrec.data.splitting import kcore_filter, leave_one_out
from llm_seqrec.data.validation import DataValidationError, QualityReport, validate_interactions
from llm_seqrec.pipelines.data_processing.nodes import prepare_interactions

TEXT_FIELDS = ["brand", "categories", "description"]  # conf/amazon's


def dataset(fmt: str, interactions: Path, items: Path, **options) -> dict:
    return {"format": fmt, "name": "amazon-scientific", "interactions": str(interactions), "items": str(items),
            "text_fields": TEXT_FIELDS, **options}


def tables(source: dict) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """``user_sequences``, ``item_catalog`` and ``data_quality`` of a data set (the stage's functions, no Kedro)."""
    interactions, catalog, quality = prepare_interactions(source, {}, {})
    return leave_one_out(interactions), catalog, quality


@pytest.fixture(scope="module")
def from_csv(amazon_sample) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    return tables(dataset("csv", amazon_sample / "interactions.csv", amazon_sample / "items.csv"))


def assert_same_tables(got, expected) -> None:
    pd.testing.assert_frame_equal(got[0], expected[0])  # user_sequences
    pd.testing.assert_frame_equal(got[1], expected[1])  # item_catalog
    assert {k: got[2][k] for k in ("users", "items", "interactions", "empty_item_fields")} == {
        k: expected[2][k] for k in ("users", "items", "interactions", "empty_item_fields")}
    assert {k: v["count"] for k, v in got[2]["repairs"].items()} == {
        k: v["count"] for k, v in expected[2]["repairs"].items()}


@pytest.mark.parametrize(
    ("fmt", "suffixes", "meta_as_python"),
    [
        ("amazon2018", None, False),
        ("amazon2018", None, True),  # the older 2018 metadata dumps: Python dict literals
        ("amazon2018", (".json", ".json"), False),  # not gzipped
        ("amazon2023", None, False),
        ("amazon2023", (".jsonl", ".jsonl"), False),
    ],
)
def test_each_published_format_gives_the_tables_of_the_csv_files(
    amazon_sample, tmp_path, from_csv, fmt, suffixes, meta_as_python
):
    reviews, meta = write_dump(amazon_sample, tmp_path, fmt, suffixes, meta_as_python)
    got = tables(dataset(fmt, reviews, meta))
    assert_same_tables(got, from_csv)
    assert got[2]["format"] == fmt and got[2]["raw_interaction_rows"] == from_csv[2]["raw_interaction_rows"]


@pytest.mark.parametrize(("fmt", "first_day"), [("amazon2018", START), ("amazon2023", START + 0.123)])
def test_timestamps_become_seconds_and_messages_name_the_fields_of_the_file(amazon_sample, tmp_path, fmt, first_day):
    inter, items = read_amazon_dataset(fmt, *write_dump(amazon_sample, tmp_path, fmt))
    assert list(inter.frame.columns) == ["user_id", "item_id", "timestamp", "line"]
    validated = validate_interactions(inter, QualityReport(), item_ids=items.frame["item_id"], items_path=items.path)
    assert validated["timestamp"].min() == first_day and first_day + 86_400 in set(validated["timestamp"])
    names = {"amazon2018": ("field 'asin'", "column 'brand'"), "amazon2023": ("field 'parent_asin'", "field 'store'")}
    assert (inter.describe("item_id"), items.describe("brand")) == names[fmt]


def test_list_fields_are_joined_and_missing_or_null_fields_are_empty(tmp_path):
    reviews = write_lines(tmp_path / "reviews.json.gz", [
        {"reviewerID": u, "asin": i, "unixReviewTime": t}
        for t, (u, i) in enumerate([("u", "a"), ("u", "b"), ("u", "c"), ("v", "a"), ("v", "b"), ("v", "d")])
    ])
    meta = write_lines(tmp_path / "meta.json.gz", [
        {"asin": "a", "title": "Tape &amp; Glue", "description": ["First.", "", "Second."],
         "category": ["Industrial & Scientific", "Tapes, Adhesives & Sealants"], "brand": None},
        {"asin": "b", "title": "Nuts", "description": "A string, as older lines have it."},
        {"asin": "c", "title": "", "category": [], "brand": "Acme"},
        {"asin": "not-reviewed", "title": "Skipped"},
        {"asin": "d", "title": "Bolts", "category": ["Fasteners"], "brand": "Acme", "description": []},
    ])
    _, catalog, quality = prepare_interactions(dataset("amazon2018", reviews, meta, text_fields=None), {}, {"n_negatives": 1})
    text = catalog.set_index("item_id")["text"]
    assert text["a"] == "Tape & Glue | description: First. Second. | categories: Industrial & Scientific,Tapes, Adhesives & Sealants"
    assert text["b"] == "Nuts | description: A string, as older lines have it."
    assert text["c"] == "item c | brand: Acme"
    assert quality["empty_item_fields"] == {"title": 1, "description": 2, "categories": 2, "brand": 2}
    assert quality["repairs"]["html_entities_unescaped"]["count"] == 1
    assert quality["repairs"]["empty_titles_filled"]["count"] == 1
    assert (quality["raw_item_rows"], quality["item_rows_without_reviews_skipped"]) == (4, 1)


def test_reading_logs_its_progress_where_there_is_no_terminal_for_the_bar(amazon_sample, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(amazon, "PROGRESS_EVERY", 100)
    monkeypatch.setattr(amazon, "LOG_EVERY", 1000)
    reviews, meta = write_dump(amazon_sample, tmp_path, "amazon2018")
    with caplog.at_level(logging.INFO, logger="llm_seqrec.data.amazon"):
        read_amazon_dataset("amazon2018", reviews, meta)
    progress = [r.getMessage() for r in caplog.records if "lines read" in r.getMessage()]
    n_reviews = len(sample_tables(amazon_sample)[0])
    assert len(progress) == n_reviews // 1000 + len(sample_tables(amazon_sample)[1]) // 1000
    assert progress[0].startswith(f"{reviews}: 1,000 lines read (") and "% of " in progress[0]
    assert any(r.getMessage().startswith(f"{reviews}: {n_reviews:,} lines in ") and "lines/s" in r.getMessage()
               for r in caplog.records)


def test_duplicate_reviews_and_metadata_are_handled_as_in_csv_files(amazon_sample, tmp_path, from_csv):
    reviews, meta = write_dump(amazon_sample, tmp_path, "amazon2018")
    lines = gzip.decompress(reviews.read_bytes()).splitlines(keepends=True)
    meta_lines = gzip.decompress(meta.read_bytes()).splitlines(keepends=True)
    reviews.write_bytes(gzip.compress(b"".join(lines + lines[:2])))  # the 2018 dumps repeat some reviews
    meta.write_bytes(gzip.compress(b"".join(meta_lines + meta_lines[:1])))  # ... and some metadata lines
    got = tables(dataset("amazon2018", reviews, meta))
    pd.testing.assert_frame_equal(got[0], from_csv[0])
    pd.testing.assert_frame_equal(got[1], from_csv[1])
    entry = got[2]["repairs"]["duplicate_interactions_dropped"]
    assert entry["count"] == 2 and entry["examples"][0]["line"] == len(lines) + 1
    assert got[2]["repairs"]["duplicate_items_dropped"]["count"] == 1


def test_k_core_repeats_until_stable_and_counts_what_it_dropped(amazon_dir, tmp_path):
    # The shared set is a 5-core; without 2% of its reviews it is not, and one pass of the filter is not enough.
    inter, items = sample_tables(amazon_dir)
    raw = inter.drop(inter.sample(frac=0.02, random_state=0).index)
    raw.to_csv(tmp_path / "interactions.csv", index=False)
    items.to_csv(tmp_path / "items.csv", index=False)
    once = raw[raw.groupby("item_id")["item_id"].transform("size").ge(5)
               & raw.groupby("user_id")["user_id"].transform("size").ge(5)]
    assert once.groupby("item_id").size().min() < 5 or once.groupby("user_id").size().min() < 5

    reviews, meta = write_dump(tmp_path, tmp_path, "amazon2023")
    interactions, _, quality = prepare_interactions(dataset("amazon2023", reviews, meta, k_core=5), {}, {})
    assert (interactions.groupby("user_idx").size() >= 5).all() and (interactions.groupby("item_idx").size() >= 5).all()
    again = QualityReport()
    assert len(kcore_filter(interactions, 5, 3, again, reviews)) == len(interactions)  # stable
    assert again.repairs["kcore_removed"]["count"] == 0
    entry = quality["repairs"]["kcore_removed"]
    assert entry["count"] == len(raw) - quality["interactions"] > len(raw) - len(once)
    assert entry["users"] == raw["user_id"].nunique() - quality["users"] > 0
    assert entry["items"] == raw["item_id"].nunique() - quality["items"] > 0

    csv = tables(dataset("csv", tmp_path / "interactions.csv", tmp_path / "items.csv", k_core=5))
    assert {k: csv[2]["repairs"]["kcore_removed"][k] for k in ("count", "users", "items", "action")} == {
        k: entry[k] for k in ("count", "users", "items", "action")}
    pd.testing.assert_frame_equal(leave_one_out(interactions), csv[0])


# ---- bad inputs: each a DataValidationError naming the file and the line (or field) ----


def error_of(source: dict) -> str:
    with pytest.raises(DataValidationError) as caught:
        prepare_interactions(source, {}, {})
    return str(caught.value)


@pytest.fixture
def dump(amazon_sample, tmp_path) -> tuple[Path, Path]:
    return write_dump(amazon_sample, tmp_path, "amazon2018")


def rewrite_line(path: Path, number: int, line: bytes) -> None:
    lines = gzip.decompress(path.read_bytes()).splitlines(keepends=True)
    lines[number - 1] = line + b"\n"
    path.write_bytes(gzip.compress(b"".join(lines)))


def test_a_review_without_a_required_field(dump):
    reviews, meta = dump
    rewrite_line(reviews, 7, json.dumps({"reviewerID": "A1", "unixReviewTime": 1400000000}).encode())
    message = error_of(dataset("amazon2018", reviews, meta))
    assert f"{reviews}, line 7, field 'asin': missing" in message
    assert "['reviewerID', 'unixReviewTime']" in message and "dataset.format=amazon2018 reads" in message


def test_a_metadata_line_without_its_id(dump):
    reviews, meta = dump
    rewrite_line(meta, 3, json.dumps({"title": "No id"}).encode())
    assert f"{meta}, line 3, field 'asin': missing" in error_of(dataset("amazon2018", reviews, meta))


def test_the_files_of_the_other_release_name_the_field_and_the_format(amazon_sample, tmp_path):
    reviews, meta = write_dump(amazon_sample, tmp_path, "amazon2023")
    message = error_of(dataset("amazon2018", reviews, meta))
    assert f"{reviews}, line 1, field 'reviewerID': missing" in message and "amazon2018" in message


@pytest.mark.parametrize(("fmt", "problem"), [
    ("amazon2018", "not JSON nor a Python dict literal"),
    ("amazon2023", "not JSON (expected one JSON object per line)"),
])
def test_a_line_that_is_not_json(amazon_sample, tmp_path, fmt, problem):
    reviews, meta = write_dump(amazon_sample, tmp_path, fmt)
    rewrite_line(meta, 12, b'{"parent_asin": "B00", "title": "cut off')
    message = error_of(dataset(fmt, reviews, meta))
    assert f"{meta}, line 12: {problem}" in message and "cut off" in message


def test_a_line_that_is_json_but_not_an_object(dump):
    reviews, meta = dump
    rewrite_line(reviews, 2, b'["A1", "B00", 1400000000]')
    assert f"{reviews}, line 2: a JSON list (expected one JSON object per line)" in error_of(
        dataset("amazon2018", reviews, meta))


def test_metadata_that_covers_none_of_the_reviewed_items(dump, tmp_path):
    reviews, _ = dump
    meta = write_lines(tmp_path / "meta_Other.json.gz", [{"asin": f"X{i}", "title": "x"} for i in range(5)])
    message = error_of(dataset("amazon2018", reviews, meta))
    assert f"{meta}: covers none of the" in message and str(reviews) in message and "field 'asin'" in message


def test_a_timestamp_that_is_not_a_number_names_the_field(dump):
    reviews, meta = dump
    rewrite_line(reviews, 5, json.dumps({"reviewerID": "0", "asin": "0", "unixReviewTime": "May 2014"}).encode())
    message = error_of(dataset("amazon2018", reviews, meta))
    assert f"{reviews}, field 'unixReviewTime': not a number" in message and "line 5" in message


@pytest.mark.parametrize("content", [b"", b"\n\n"])
def test_an_empty_file(dump, content):
    reviews, meta = dump
    reviews.write_bytes(gzip.compress(content))
    assert f"{reviews}: the file is empty" in error_of(dataset("amazon2018", reviews, meta))


def test_a_truncated_gzip_file(dump):
    reviews, meta = dump
    data = reviews.read_bytes()
    reviews.write_bytes(data[: len(data) // 2])
    message = error_of(dataset("amazon2018", reviews, meta))
    assert f"{reviews}: cannot be decompressed after line" in message


def test_a_missing_file(dump, tmp_path):
    reviews, _ = dump
    missing = tmp_path / "meta_Missing.json.gz"
    assert f"{missing}: file not found" in error_of(dataset("amazon2018", reviews, missing))


def test_bytes_that_are_not_utf8_in_text_are_replaced_and_counted(dump):
    reviews, meta = dump
    line = gzip.decompress(meta.read_bytes()).splitlines()[0].replace(b"Relay/CAPACITOR", b"Relay/CAPACIT\xd6R", 1)
    rewrite_line(meta, 1, line)
    _, catalog, quality = tables(dataset("amazon2018", reviews, meta))
    assert quality["repairs"]["item_text_invalid_utf8_replaced"]["count"] == 1
    assert catalog["text"].str.contains("CAPACIT\ufffdR", regex=False).sum() == 1


def test_an_unknown_text_field_lists_the_formats_columns(dump):
    reviews, meta = dump
    message = error_of(dataset("amazon2018", reviews, meta, text_fields=["store"]))
    assert "column 'store': named in dataset.text_fields" in message and "'brand'" in message
