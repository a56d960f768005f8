"""llm_item_embeddings: the frozen SmolLM2's item vectors, on real Amazon items; cached by content."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from llm_seqrec.data.readers import read_delimited
from llm_seqrec.data.validation import QualityReport, validate_items
from llm_seqrec.datasets import AtomicParquetDataset, ItemEmbeddingCacheDataset
from llm_seqrec.llm import item_embeddings
from llm_seqrec.llm.backbone import load_backbone
from llm_seqrec.llm.item_embeddings import ItemEmbeddingSettings, embed_catalog, embedding_matrix

SETTINGS = ItemEmbeddingSettings(max_tokens=12, layer=2, batch_size=4, progress=False, dtype="float32")


@pytest.fixture(scope="module")
def items(amazon_dir) -> pd.DataFrame:
    """Ten real items as the catalogue has them (title, text = title | description ...)."""
    raw = pd.read_csv(amazon_dir / "items.csv", nrows=10).fillna("")
    text = raw["title"] + " | description: " + raw["description"]
    return pd.DataFrame({"item_idx": np.arange(1, 11), "item_id": raw["item_id"].astype(str), "title": raw["title"],
                         "text": text})


def encode_counting(monkeypatch) -> list[int]:
    """Every call of the encoder records how many texts it encoded."""
    counts: list[int] = []
    real = item_embeddings.pooled_states

    def counting(backbone, texts, *args, **kwargs):
        counts.append(len(texts))
        return real(backbone, texts, *args, **kwargs)

    monkeypatch.setattr(item_embeddings, "pooled_states", counting)
    return counts


def test_vectors_round_trip_through_the_catalog_and_a_rerun_encodes_nothing(items, tmp_path, monkeypatch):
    counts = encode_counting(monkeypatch)
    cache_set = ItemEmbeddingCacheDataset(filepath=str(tmp_path / "cache"))
    table = embed_catalog(load_backbone(), items, SETTINGS, cache_set.load())[2]
    assert counts == [10]
    output = AtomicParquetDataset(filepath=str(tmp_path / "llm_item_embeddings.parquet"))
    output.save(table)
    loaded = output.load()
    assert loaded["item_idx"].tolist() == list(range(1, 11)) and loaded["has_text"].all()
    vectors = np.stack(loaded["embedding"])
    assert vectors.shape == (10, 576) and vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors, np.stack(table["embedding"]))

    again = embed_catalog(load_backbone(), items, SETTINGS, cache_set.load())[2]  # a new handle on the same folder
    assert counts == [10], "a re-run encoded again"
    np.testing.assert_array_equal(np.stack(again["embedding"]), vectors)
    assert len(list((tmp_path / "cache").glob("part-*.parquet"))) == 1


def test_a_changed_text_or_depth_recomputes_exactly_that(items, tmp_path, monkeypatch):
    counts = encode_counting(monkeypatch)
    cache = ItemEmbeddingCacheDataset(filepath=str(tmp_path / "cache")).load()
    first = embed_catalog(load_backbone(), items, SETTINGS, cache)[2]
    changed = items.copy()
    changed.loc[3, "text"] = changed.loc[3, "text"] + " now in blue"
    second = embed_catalog(load_backbone(), changed, SETTINGS, cache)[2]
    assert counts == [10, 1]
    same = np.arange(10) != 3
    np.testing.assert_array_equal(np.stack(second["embedding"])[same], np.stack(first["embedding"])[same])
    assert not np.allclose(second["embedding"][3], first["embedding"][3])

    deeper = embed_catalog(load_backbone(), changed, dataclasses.replace(SETTINGS, layer=3), cache)[3]
    assert counts == [10, 1, 10]
    assert not np.allclose(np.stack(deeper["embedding"]), np.stack(second["embedding"]))
    # The vector at depth 3 is the mean of what the backbone cut to 3 layers outputs (through its final norm).
    cut = load_backbone(dtype="float32", layers=3)
    ids = cut.tokenizer(changed["text"].tolist()[:1], add_special_tokens=False, truncation=True, max_length=12,
                        return_tensors="pt")
    with torch.no_grad():
        expected = cut.model.get_decoder()(**ids).last_hidden_state.mean(1)[0].numpy()
    np.testing.assert_allclose(deeper["embedding"][0], expected, atol=1e-4)


def test_items_without_text_get_no_vector_and_are_counted(amazon_dir, tmp_path, monkeypatch):
    raw = pd.read_csv(amazon_dir / "items.csv", nrows=4, dtype=str).fillna("")
    raw.loc[2, ["title", "description", "categories", "brand"]] = ""
    raw.to_csv(tmp_path / "items.csv", index=False)
    report = QualityReport()
    valid = validate_items(read_delimited(tmp_path / "items.csv", delimiter=","), report, text_fields=None, max_text_chars=500)
    assert report.repairs["items_without_text"]["count"] == 1
    catalog = valid.assign(item_idx=np.arange(1, 5))
    counts = encode_counting(monkeypatch)
    table = embed_catalog(load_backbone(), catalog, SETTINGS, ItemEmbeddingCacheDataset(filepath=str(tmp_path / "c")).load())[2]
    assert counts == [3] and table["has_text"].tolist() == [True, True, False, True]
    assert not table["embedding"][2].any()
    vectors, has_text = embedding_matrix(table, 4)
    assert vectors.shape == (5, 576) and has_text.tolist() == [False, True, True, False, True]
