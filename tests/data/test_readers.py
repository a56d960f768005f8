"""Readers: MovieLens from the installed wheels, CSV files, line numbers, ids kept as text."""

from __future__ import annotations

import pandas as pd
import pytest

from llm_seqrec.data.readers import movielens_dir, read_delimited, read_movielens
from llm_seqrec.data.validation import DataValidationError


def test_movielens_100k_reads_every_rating_with_titles_and_genres():
    inter, items = read_movielens("ml-100k")
    assert len(inter.frame) == 100_000
    assert {"user_id", "item_id", "timestamp", "line"} <= set(inter.frame.columns)
    assert list(items.frame.columns) == ["item_id", "title", "genre", "line"]
    first = items.frame.iloc[0]
    assert first[["item_id", "title", "genre"]].tolist() == ["1", "Toy Story (1995)", "Animation Children's Comedy"]
    # A release year that is not a year ("V") is not appended; the title already carries one.
    odd = items.frame.set_index("item_id").loc["1412", "title"]
    assert odd == "Land Before Time III: The Time of the Great Giving (1995)"


def test_movielens_1m_item_ids_are_the_titles_with_year():
    inter, items = read_movielens("ml-1m")
    assert len(inter.frame) == 1_000_209
    assert inter.frame.iloc[0]["user_id"] == "1m_1"
    assert (items.frame["title"] == items.frame["item_id"]).all()
    assert items.frame.iloc[0]["title"] == "Toy Story (1995)"


def test_unknown_movielens_name():
    with pytest.raises(ValueError, match="ml-20m"):
        movielens_dir("ml-20m")


def test_ids_are_read_as_written(tmp_path):
    path = tmp_path / "interactions.csv"
    path.write_text("user_id,item_id,timestamp\n007,1.5,1\nB00X,2,2.0\n7,3.0,3\n")
    frame = read_delimited(path, delimiter=",").frame
    assert frame["user_id"].tolist() == ["007", "B00X", "7"]
    assert frame["item_id"].tolist() == ["1.5", "2", "3.0"]
    assert frame["timestamp"].tolist() == ["1", "2.0", "3"]


def test_line_numbers_follow_quoted_newlines_and_blank_lines(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text('item_id,title,description\n1,a,"two\nlines"\n\n2,b,plain\n   \n3,"c\n\nc",x\n4,d,y\n')
    frame = read_delimited(path, delimiter=",").frame
    assert frame["item_id"].tolist() == ["1", "2", "3", "4"]
    assert frame["line"].tolist() == [2, 5, 7, 10]


def test_line_numbers_with_crlf(tmp_path):
    path = tmp_path / "interactions.csv"
    path.write_bytes(b"user_id,item_id,timestamp\r\n1,2,3\r\n4,5,6\r\n")
    frame = read_delimited(path, delimiter=",").frame
    assert frame["line"].tolist() == [2, 3]
    assert frame["timestamp"].tolist() == ["3", "6"]


def test_short_rows_have_empty_cells(tmp_path):
    path = tmp_path / "interactions.csv"
    path.write_text("user_id,item_id,timestamp\n1,2\n")
    frame = read_delimited(path, delimiter=",").frame
    assert frame.iloc[0]["timestamp"] == ""


def test_byte_order_mark_is_not_part_of_the_header(tmp_path):
    path = tmp_path / "interactions.csv"
    path.write_bytes("user_id,item_id,timestamp\n1,2,3\n".encode("utf-8-sig"))
    assert list(read_delimited(path, delimiter=",").frame.columns) == ["user_id", "item_id", "timestamp", "line"]


def test_invalid_utf8_is_replaced_and_flagged(tmp_path):
    path = tmp_path / "items.csv"
    path.write_bytes(b"item_id,title\n1,Caf\xe9\n")
    table = read_delimited(path, delimiter=",")
    assert table.invalid_utf8 and table.frame.iloc[0]["title"] == "Caf\ufffd"


def test_header_only_and_empty(tmp_path):
    path = tmp_path / "interactions.csv"
    path.write_text("user_id,item_id,timestamp\n")
    with pytest.raises(DataValidationError, match="no data rows"):
        read_delimited(path, delimiter=",")
    path.write_text("\n  \n")
    with pytest.raises(DataValidationError, match="empty"):
        read_delimited(path, delimiter=",")


def test_pipe_delimiter_is_named(tmp_path):
    path = tmp_path / "interactions.csv"
    pd.DataFrame({"user_id": [1], "item_id": [2], "timestamp": [3]}).to_csv(path, sep="|", index=False)
    with pytest.raises(DataValidationError, match="separated by pipes, but this file must be separated by commas"):
        read_delimited(path, delimiter=",")
