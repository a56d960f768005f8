"""Every bad-input case of docs/data_validation.md, built from the shared Amazon sample: either a
``DataValidationError`` naming the file, the column and an example row, or a repair counted in
``data_quality``."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from llm_seqrec.data.validation import DataValidationError
from llm_seqrec.pipelines.data_processing.nodes import prepare_interactions


@pytest.fixture
def raw(amazon_sample, tmp_path) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """The sample's two tables as strings, and a folder to write modified copies to."""
    inter = pd.read_csv(amazon_sample / "interactions.csv", dtype=str, keep_default_na=False)
    items = pd.read_csv(amazon_sample / "items.csv", dtype=str, keep_default_na=False)
    return inter, items, tmp_path


def write(folder: Path, inter: pd.DataFrame | None = None, items: pd.DataFrame | None = None, **csv_args) -> Path:
    if inter is not None:
        inter.to_csv(folder / "interactions.csv", index=False, **csv_args)
    if items is not None:
        items.to_csv(folder / "items.csv", index=False, **csv_args)
    return folder


def process(folder: Path, **data_processing) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    dataset = {
        "format": "csv",
        "name": "amazon-bad",
        "interactions": str(folder / "interactions.csv"),
        "items": str(folder / "items.csv"),
    }
    return prepare_interactions(dataset, data_processing, {})


def repaired(quality: dict, key: str) -> int:
    return quality["repairs"][key]["count"]


def error_of(folder: Path, **data_processing) -> str:
    with pytest.raises(DataValidationError) as caught:
        process(folder, **data_processing)
    return str(caught.value)


def test_clean_sample_needs_no_repair(raw):
    inter, items, folder = raw
    interactions, catalog, quality = process(write(folder, inter, items))
    skip = {"timestamp_ties", "texts_truncated", "html_entities_unescaped"}  # real data has a few
    assert {k: v["count"] for k, v in quality["repairs"].items() if k not in skip} == dict.fromkeys(
        set(quality["repairs"]) - skip, 0
    )
    assert quality["interactions"] == len(interactions) == len(inter)


def test_missing_file(raw):
    inter, _, folder = raw
    message = error_of(write(folder, inter))
    assert str(folder / "items.csv") in message and "not found" in message


@pytest.mark.parametrize(("sep", "name"), [(";", "semicolons"), ("\t", "tabs")])
def test_wrong_delimiter_is_named(raw, sep, name):
    inter, items, folder = raw
    write(folder, inter, items)
    inter.to_csv(folder / "interactions.csv", index=False, sep=sep)
    message = error_of(folder)
    assert "interactions.csv" in message and name in message and "line 1" in message


@pytest.mark.parametrize("column", ["user_id", "item_id", "timestamp"])
def test_missing_column(raw, column):
    inter, items, folder = raw
    message = error_of(write(folder, inter.drop(columns=column), items))
    assert "interactions.csv" in message and f"column {column!r}" in message and "line 1" in message


def test_missing_title_column(raw):
    inter, items, folder = raw
    message = error_of(write(folder, inter, items.drop(columns="title")))
    assert "items.csv" in message and "column 'title'" in message


def test_extra_columns_are_ignored(raw):
    inter, items, folder = raw
    baseline, _, _ = process(write(folder, inter, items))
    interactions, _, _ = process(write(folder, inter.assign(rating="5", source="web"), items))
    pd.testing.assert_frame_equal(interactions, baseline)


def test_empty_file(raw):
    inter, items, folder = raw
    write(folder, inter, items)
    (folder / "interactions.csv").write_bytes(b"")
    message = error_of(folder)
    assert "interactions.csv" in message and "empty" in message


def test_header_only(raw):
    inter, items, folder = raw
    write(folder, inter.head(0), items)
    message = error_of(folder)
    assert "interactions.csv" in message and "no data rows" in message and "user_id,item_id,timestamp" in message


def test_row_with_too_many_fields(raw):
    inter, items, folder = raw
    write(folder, inter, items)
    lines = (folder / "interactions.csv").read_text().splitlines()
    lines[4] += ",surplus"
    (folder / "interactions.csv").write_text("\n".join(lines) + "\n")
    message = error_of(folder)
    assert "interactions.csv" in message and "line 5" in message


@pytest.mark.parametrize(
    ("value", "problem"), [("yesterday", "not a number"), ("inf", "not a number"), ("-1", "negative")]
)
def test_unusable_timestamp_names_file_column_and_line(raw, value, problem):
    inter, items, folder = raw
    inter.loc[7, "timestamp"] = value
    message = error_of(write(folder, inter, items))
    assert "interactions.csv" in message and "column 'timestamp'" in message and problem in message
    assert "line 9" in message and value in message  # row 7 = line 9 (header is line 1)


def test_missing_timestamp_row_is_dropped_and_counted(raw):
    inter, items, folder = raw
    inter.loc[[3, 10], "timestamp"] = ""
    _, _, quality = process(write(folder, inter, items))
    entry = quality["repairs"]["interactions_without_timestamp_dropped"]
    assert entry["count"] == 2 and entry["examples"][0]["line"] == 5
    assert quality["raw_interaction_rows"] == len(inter)


def test_timestamp_ties_are_kept_in_input_order_and_counted(raw):
    inter, items, folder = raw
    user = inter["user_id"].iloc[0]
    rows = inter.index[inter["user_id"] == user]
    inter.loc[rows, "timestamp"] = "5"  # every interaction of this user at one time
    interactions, catalog, quality = process(write(folder, inter, items))
    assert repaired(quality, "timestamp_ties") == len(rows) - 1
    kept = interactions[interactions["user_id"] == user]
    assert kept["item_id"].tolist() == inter.loc[rows, "item_id"].tolist()


def test_string_float_and_mixed_ids(raw):
    inter, items, folder = raw
    baseline, base_catalog, _ = process(write(folder, inter, items))
    inter = inter.assign(user_id="u" + inter["user_id"], item_id=inter["item_id"] + ".0")  # strings, floats
    items = items.assign(item_id=items["item_id"].where(items.index % 2 == 0, items["item_id"] + ".0"))  # mixed
    interactions, catalog, quality = process(write(folder, inter, items))
    assert repaired(quality, "interaction_ids_normalised") == len(inter)
    assert repaired(quality, "item_ids_normalised") == len(items) // 2
    histories = interactions.groupby("user_id")["item_idx"].agg(list)
    base_histories = baseline.assign(user_id="u" + baseline["user_id"]).groupby("user_id")["item_idx"].agg(list)
    pd.testing.assert_series_equal(histories, base_histories)
    pd.testing.assert_frame_equal(catalog, base_catalog)


def test_ids_other_than_whole_floats_stay_as_written(raw):
    inter, items, folder = raw
    items.loc[0, "item_id"], items.loc[1, "item_id"] = "007", "1.5"
    inter.loc[inter["item_id"] == items.loc[0, "item_id"], "item_id"] = "7"  # not "007"
    _, catalog, quality = process(write(folder, inter, items))
    assert "1.5" not in set(catalog["item_id"])  # its interactions still point at the old id
    assert repaired(quality, "interactions_with_unknown_item_dropped") > 0


def test_items_absent_from_items_file_are_dropped_and_counted(raw):
    inter, items, folder = raw
    missing = inter["item_id"].iloc[0]
    interactions, catalog, quality = process(write(folder, inter, items[items["item_id"] != missing]))
    entry = quality["repairs"]["interactions_with_unknown_item_dropped"]
    assert entry["count"] == (inter["item_id"] == missing).sum()
    assert entry["examples"][0]["item_id"] == missing and entry["examples"][0]["line"] == 2
    assert missing not in set(interactions["item_id"])


def test_no_common_item_ids_is_an_error(raw):
    inter, items, folder = raw
    message = error_of(write(folder, inter, items.assign(item_id="B" + items["item_id"])))
    assert "interactions.csv" in message and "column 'item_id'" in message and "items.csv" in message


@pytest.mark.parametrize("title", ["", "   \t "])
def test_empty_title_is_filled_and_counted(raw, title):
    inter, items, folder = raw
    items.loc[2, "title"] = title
    items.loc[2, ["description", "categories", "brand"]] = ["", "", ""]
    _, catalog, quality = process(write(folder, inter, items))
    assert repaired(quality, "empty_titles_filled") == 1
    assert quality["repairs"]["empty_titles_filled"]["examples"][0]["line"] == 4
    item_id = items.loc[2, "item_id"]
    row = catalog[catalog["item_id"] == item_id].iloc[0]
    assert row["title"] == row["text"] == f"item {item_id}"


def test_non_utf8_bytes_in_text_are_replaced_and_counted(raw):
    inter, items, folder = raw
    write(folder, inter, items)
    data = (folder / "items.csv").read_bytes().replace(b"Relay/CAPACITOR", b"Relay/CAPACIT\xd6R", 1)
    (folder / "items.csv").write_bytes(data)
    _, catalog, quality = process(folder)
    assert repaired(quality, "item_text_invalid_utf8_replaced") == 1
    assert catalog["text"].str.contains("CAPACIT\ufffdR", regex=False).sum() == 1


def test_non_utf8_bytes_in_an_id_are_an_error(raw):
    inter, items, folder = raw
    write(folder, inter, items)
    lines = (folder / "interactions.csv").read_bytes().split(b"\n")
    lines[3] = b"\xff" + lines[3]
    (folder / "interactions.csv").write_bytes(b"\n".join(lines))
    message = error_of(folder)
    assert "interactions.csv" in message and "column 'user_id'" in message
    assert "line 4" in message and "UTF-8" in message


def test_html_entities_are_unescaped_and_counted(raw):
    inter, items, folder = raw
    _, _, before = process(write(folder, inter, items))
    items.loc[5, "title"] = "Nuts &amp; Bolts &#8211; &quot;Heavy&quot;"
    _, catalog, quality = process(write(folder, inter, items))
    assert repaired(quality, "html_entities_unescaped") == repaired(before, "html_entities_unescaped") + 1
    title = catalog.loc[catalog["item_id"] == items.loc[5, "item_id"], "title"].iloc[0]
    assert title == 'Nuts & Bolts \u2013 "Heavy"'


def test_huge_description_is_truncated_and_counted(raw):
    inter, items, folder = raw
    items.loc[0, "description"] = "word " * 10_000  # 50,000 characters
    _, catalog, quality = process(write(folder, inter, items), max_text_chars=300)
    assert catalog["text"].str.len().max() <= 300
    entry = quality["repairs"]["texts_truncated"]
    assert entry["count"] >= 1 and "50000 characters" in str(entry["examples"])


def test_short_histories_are_dropped_and_counted(raw):
    inter, items, folder = raw
    extra = pd.DataFrame(
        {"user_id": ["new1", "new2", "new2"], "item_id": ["0", "0", "1"], "timestamp": ["0", "0", "1"]}
    )
    interactions, _, quality = process(write(folder, pd.concat([inter, extra]), items))
    entry = quality["repairs"]["short_histories_dropped"]
    assert (entry["count"], entry["interactions"]) == (2, 3)
    assert not interactions["user_id"].isin(["new1", "new2"]).any()


def test_duplicate_interactions_are_dropped_and_counted(raw):
    inter, items, folder = raw
    doubled = pd.concat([inter, inter.iloc[[0, 5]]])
    interactions, _, quality = process(write(folder, doubled, items))
    entry = quality["repairs"]["duplicate_interactions_dropped"]
    assert entry["count"] == 2 and entry["examples"][0]["line"] == len(inter) + 2
    assert len(interactions) == len(inter)


def test_kcore_that_empties_the_data_names_the_parameter(raw):
    inter, items, folder = raw
    write(folder, inter, items)
    dataset = {"format": "csv", "interactions": str(folder / "interactions.csv"), "items": str(folder / "items.csv")}
    with pytest.raises(DataValidationError) as caught:
        prepare_interactions({**dataset, "k_core": 500}, {}, {})
    assert "dataset.k_core=500" in str(caught.value) and "interactions.csv" in str(caught.value)


def test_unknown_text_field_names_the_parameter(raw):
    inter, items, folder = raw
    write(folder, inter, items)
    dataset = {"format": "csv", "interactions": str(folder / "interactions.csv"), "items": str(folder / "items.csv")}
    with pytest.raises(DataValidationError, match=re.escape("column 'colour': named in dataset.text_fields")):
        prepare_interactions({**dataset, "text_fields": ["brand", "colour"]}, {}, {})


def test_too_many_negatives_names_the_parameter(raw):
    inter, items, folder = raw
    write(folder, inter, items)
    dataset = {"format": "csv", "interactions": str(folder / "interactions.csv"), "items": str(folder / "items.csv")}
    with pytest.raises(ValueError, match=r"evaluation\.n_negatives=100000"):
        prepare_interactions(dataset, {}, {"n_negatives": 100_000})
