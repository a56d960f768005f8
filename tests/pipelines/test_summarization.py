import numpy as np
import pandas as pd
import pytest
from conftest import csv_params, run_kedro

import llm_seqrec.pipelines.summarization.nodes as nodes
from llm_seqrec.datasets.summary_cache import SummaryCache
from llm_seqrec.evaluation.protocol import llm_user_sample
from llm_seqrec.llm.backbone import load_backbone
from llm_seqrec.llm.generation import Generation, generate_chat
from llm_seqrec.llm.summarize import CACHE_COLUMNS, SUMMARY_COLUMNS

TINY = {"block_size": 3, "max_blocks": 3, "train_users": 3, "progress": False, "generation": {"max_new_tokens": 8}}


def synthetic_tables(n_users: int = 6) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Users with distinct items (user u: u*100+1, ...), so an item's marker names one position."""
    rows = []
    for u in range(1, n_users + 1):
        history = [u * 100 + k for k in range(1, 4 + 2 * u)]
        rows.append((u, str(u), history[:-2], history[-2], history[-1]))
    sequences = pd.DataFrame(rows, columns=["user_idx", "user_id", "train_items", "valid_target", "test_target"])
    items = sorted(i for _, _, train, valid, test in rows for i in [*train, valid, test])
    catalog = pd.DataFrame({"item_idx": items, "item_id": [str(i) for i in items], "title": [f"<{i}>" for i in items]})
    catalog["text"] = catalog["title"]
    return sequences, catalog


@pytest.fixture
def counted_llm(monkeypatch):
    """The real generator, its calls recorded."""
    calls = []

    def counting(backbone, messages, settings, system=None):
        calls.append(list(messages))
        return generate_chat(backbone, messages, settings, system)

    monkeypatch.setattr(nodes, "generate_chat", counting)
    return calls


@pytest.fixture(scope="module")
def backbone():
    return load_backbone()


def test_no_target_or_later_item_reaches_a_summary_prompt(tmp_path, monkeypatch, backbone):
    sequences, catalog = synthetic_tables()
    evaluation = {"llm_user_sample": 4, "seed": 3}
    blocks = nodes.make_history_blocks(sequences, TINY, evaluation)
    sample = set(llm_user_sample(sequences, 4, 3).tolist())
    assert set(blocks.loc[blocks["cutoff"] != "train", "user_idx"]) == sample
    assert (blocks["cutoff"] == "train").sum() == 3 and set(blocks["cutoff"]) == {"train", "valid", "test"}

    prompts = []

    def record(backbone, messages, settings, system=None):
        prompts.extend(messages)
        return [Generation("s", 1, 1, 0.0)] * len(messages)

    monkeypatch.setattr(nodes, "load_backbone", lambda **_: backbone)
    monkeypatch.setattr(nodes, "generate_chat", record)
    by_user = sequences.set_index("user_idx")
    for row in blocks.itertuples():
        prompts.clear()  # one (user, cutoff) at a time, each with its own cache: its prompts are its own
        cache = SummaryCache(tmp_path / f"{row.user_idx}-{row.cutoff}")
        nodes.summarize_histories(blocks.loc[[row.Index]], catalog, cache, TINY, {})
        user = by_user.loc[row.user_idx]
        train = list(user["train_items"])
        full = [*train, user["valid_target"], user["test_target"]]
        target = {"train": len(train) - 1, "valid": len(train), "test": len(train) + 1}[row.cutoff]
        shown = " ".join(prompts)
        assert all(f"<{i}>" not in shown for i in full[target:]), (row.user_idx, row.cutoff)
        assert f"<{full[target - 1]}>" in shown  # the item just before the target is summarised


def test_the_leakage_check_fails_on_a_summary_that_saw_its_target(tmp_path):
    sequences = pd.DataFrame(
        [(1, "1", [1, 2, 3, 4, 5, 6, 7], 8, 9)], columns=["user_idx", "user_id", "train_items", "valid_target", "test_target"]
    )
    cache = SummaryCache(tmp_path)
    made = {"ok-train": [2, 3, 4, 5, 6], "ok-valid": [3, 4, 5, 6, 7], "ok-test": [4, 5, 6, 7, 8], "leak": [4, 5, 6, 7, 8]}
    cache.append(pd.DataFrame(
        [(key, 1, "valid", "hierarchical", 0, [], items, "v1", "m", "s", 1, 1, 0.0) for key, items in made.items()],
        columns=CACHE_COLUMNS,
    ))

    def summaries(pairs):
        return pd.DataFrame([(1, cutoff, "hierarchical", "s", key) for cutoff, key in pairs], columns=SUMMARY_COLUMNS)

    fine = summaries([("train", "ok-train"), ("valid", "ok-valid"), ("test", "ok-test")])
    assert nodes.check_no_leakage(fine, cache, sequences) is fine
    with pytest.raises(ValueError, match="user 1 at valid"):
        nodes.check_no_leakage(summaries([("valid", "leak")]), cache, sequences)
    with pytest.raises(ValueError, match="user 1 at test"):  # missing the last item before the target
        nodes.check_no_leakage(summaries([("test", "ok-valid")]), cache, sequences)


@pytest.mark.slow
def test_the_pipeline_summarises_resumes_from_its_cache_and_runs_both_methods(kedro_project, amazon_sample, counted_llm):
    params = csv_params(amazon_sample)
    run_kedro(kedro_project, ["data_processing", "summarization"], params)
    feature = kedro_project / "data/04_feature" / params["dataset"]["name"]  # catalog: data/<layer>/<dataset>/

    summaries = pd.read_parquet(feature / "user_summaries.parquet")
    assert list(summaries.columns) == SUMMARY_COLUMNS
    assert summaries.groupby("cutoff").size().to_dict() == {"test": 8, "train": 4, "valid": 8}  # conf/quick
    assert (summaries["method"] == "hierarchical").all() and summaries["summary"].str.len().gt(0).all()
    blocks = pd.read_parquet(feature / "history_blocks.parquet")
    n_blocks = blocks["blocks"].map(len)
    assert n_blocks.between(1, 3).all()  # conf/quick: max_blocks 3
    cache = SummaryCache(feature / "summary_cache").to_frame()
    assert cache["key"].is_unique and set(summaries["key"]) <= set(cache["key"])
    generated = sum(len(c) for c in counted_llm)
    assert generated == len(cache) and (cache["tokens_out"] <= 16).all() and (cache["seconds"] > 0).all()
    # Valid and test histories differ by one item, so they share their complete blocks.
    assert len(cache) < (n_blocks + (n_blocks > 1)).sum()

    counted_llm.clear()
    run_kedro(kedro_project, ["summarization"], params)
    assert counted_llm == []  # everything is in the cache
    pd.testing.assert_frame_equal(pd.read_parquet(feature / "user_summaries.parquet"), summaries)

    run_kedro(kedro_project, ["summarization"], {**params, "summarization": {"method": "recurrent"}})
    recurrent = pd.read_parquet(feature / "user_summaries.parquet")
    assert (recurrent["method"] == "recurrent").all() and set(recurrent["key"]).isdisjoint(summaries["key"])
    steps = [len(c) for c in counted_llm]  # step t of every user with a block t, in one call (chunks of 8)
    assert sum(steps) == len(SummaryCache(feature / "summary_cache")) - len(cache)
    assert sum(steps) <= n_blocks.sum() and len(steps) >= n_blocks.max()
    assert np.array_equal(recurrent[["user_idx", "cutoff"]].to_numpy(), summaries[["user_idx", "cutoff"]].to_numpy())
