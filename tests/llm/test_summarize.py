import dataclasses
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from llm_seqrec.datasets.summary_cache import SummaryCache, SummaryCacheDataset
from llm_seqrec.llm.backbone import load_backbone
from llm_seqrec.llm.generation import Generation, GenerationSettings, generate_chat
from llm_seqrec.llm.summarize import (
    CACHE_COLUMNS,
    Request,
    Templates,
    covered_items,
    history_blocks,
    item_lines,
    summarize,
)
from llm_seqrec.params import SummaryTemplatesParams

TEMPLATES = Templates(version="v1", **SummaryTemplatesParams().model_dump())
LINES = {i: f"item number {i}" for i in range(1, 100)}


class FakeLLM:
    """Counts calls and prompts; answers with a numbered text; raises KeyboardInterrupt (a Ctrl-C)
    when called after ``interrupt_after`` calls."""

    def __init__(self, interrupt_after: int | None = None, generate=None):
        self.calls: list[list[str]] = []
        self.interrupt_after = interrupt_after
        self.generate = generate

    def __call__(self, messages):
        if self.interrupt_after is not None and len(self.calls) >= self.interrupt_after:
            raise KeyboardInterrupt
        self.calls.append(list(messages))
        if self.generate is not None:
            return self.generate(messages)
        return [Generation(f"summary {len(self.calls)}.{i}", 10, 2, 0.01) for i in range(len(messages))]

    @property
    def n_generated(self) -> int:
        return sum(len(c) for c in self.calls)


def request(user: int, items, cutoff: str = "valid", block_size: int = 5, max_blocks: int = 4) -> Request:
    return Request(user, cutoff, tuple(map(tuple, history_blocks(list(items), block_size, max_blocks))))


def run(requests, llm, cache: SummaryCache, method="hierarchical", templates=TEMPLATES, model="m", chunk_size=100, lines=LINES):
    return summarize(
        requests, method=method, templates=templates, lines=lines, generate_fn=llm, model=model,
        generation={"max_new_tokens": 8}, known=cache.summaries(), on_chunk=cache.append,
        chunk_size=chunk_size, progress=False,
    )


def test_blocks_are_counted_from_the_start_of_the_history():
    assert history_blocks(list(range(1, 13)), 5, 4) == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12]]
    assert history_blocks(list(range(1, 13)), 5, 2) == [[6, 7, 8, 9, 10], [11, 12]]
    # One more item (the test cutoff's history) keeps the complete blocks; only the partial one grows.
    assert history_blocks(list(range(1, 14)), 5, 2) == [[6, 7, 8, 9, 10], [11, 12, 13]]
    assert history_blocks(list(range(1, 16)), 5, 2) == [[6, 7, 8, 9, 10], [11, 12, 13, 14, 15]]


@pytest.mark.parametrize(
    ("method", "call_sizes"),
    # users with 1, 2 and 3 blocks: hierarchical = every block in one call, then the two merges;
    # recurrent = step t of every user that has a block t, one call per step.
    [("hierarchical", [6, 2]), ("recurrent", [3, 2, 1])],
)
def test_both_methods_make_the_expected_calls(tmp_path, method, call_sizes):
    requests = [request(1, range(1, 4)), request(2, range(11, 21)), request(3, range(31, 44))]
    llm = FakeLLM()
    out = run(requests, llm, SummaryCache(tmp_path), method=method)
    assert [len(c) for c in llm.calls] == call_sizes
    assert list(out.columns) == ["user_idx", "cutoff", "method", "summary", "key"]
    assert out["user_idx"].tolist() == [1, 2, 3] and (out["method"] == method).all()
    cache = SummaryCache(tmp_path).to_frame()
    assert len(cache) == sum(call_sizes) and cache["key"].is_unique
    finals = cache.set_index("key").loc[out["key"]]
    if method == "hierarchical":  # a single block's summary is final; more blocks end in a merge
        assert finals["level_or_step"].tolist() == [0, 1, 1]
        assert finals["input_keys"].map(len).tolist() == [0, 2, 3]
    else:
        assert finals["level_or_step"].tolist() == [1, 2, 3]


def test_recurrent_steps_read_the_previous_summary(tmp_path):
    llm = FakeLLM()
    out = run([request(1, range(1, 12))], llm, SummaryCache(tmp_path), method="recurrent")
    step2, step3 = llm.calls[1][0], llm.calls[2][0]
    assert "summary 1.0" in step2 and "item number 6" in step2 and "item number 1\n" not in step2
    assert "summary 2.0" in step3 and "item number 11" in step3
    cache = SummaryCache(tmp_path).to_frame()
    final = out["key"].iloc[0]
    assert covered_items(final, dict(zip(cache["key"], cache["item_ids"])), dict(zip(cache["key"], cache["input_keys"]))) == list(range(1, 12))


def test_identical_keys_are_summarised_once_and_a_second_run_makes_no_calls(tmp_path):
    # valid and test cutoffs of a user share the complete blocks; a second user has the same history.
    requests = [request(1, range(1, 13)), request(1, range(1, 14), "test"), request(2, range(1, 13))]
    llm = FakeLLM()
    first = run(requests, llm, SummaryCache(tmp_path))
    assert llm.n_generated == 4 + 2  # blocks 1-5, 6-10, 11-12, 11-13; two merges
    assert first["key"].iloc[0] == first["key"].iloc[2] and first["summary"].iloc[0] == first["summary"].iloc[2]

    again = FakeLLM()
    second = run(requests, again, SummaryCache(tmp_path))
    assert again.calls == []
    pd.testing.assert_frame_equal(first, second)


@pytest.mark.parametrize("method", ["hierarchical", "recurrent"])
def test_a_change_invalidates_exactly_the_affected_keys(tmp_path, method):
    requests = [request(1, range(1, 14)), request(2, range(21, 34))]
    run(requests, FakeLLM(), SummaryCache(tmp_path), method=method)  # 3 blocks each

    # user 2's last item changes: hierarchical redoes that block and the merge; recurrent its last step.
    changed = [requests[0], request(2, [*range(21, 33), 99])]
    llm = FakeLLM()
    run(changed, llm, SummaryCache(tmp_path), method=method)
    assert llm.n_generated == (2 if method == "hierarchical" else 1)

    # an earlier block changes: recurrent redoes every later step too
    llm = FakeLLM()
    run([request(1, [1, 2, 3, 4, 98, *range(6, 14)])], llm, SummaryCache(tmp_path), method=method)
    assert llm.n_generated == (2 if method == "hierarchical" else 3)

    for change in ({"templates": dataclasses.replace(TEMPLATES, version="v2")}, {"model": "other"}):
        llm = FakeLLM()
        run(requests, llm, SummaryCache(tmp_path), method=method, **change)
        assert llm.n_generated == (8 if method == "hierarchical" else 6)

    llm = FakeLLM()
    run(requests, llm, SummaryCache(tmp_path), method=method, lines={**LINES, 22: "a new text for item 22"})
    assert llm.n_generated == (2 if method == "hierarchical" else 3)


@pytest.fixture(scope="module")
def backbone():
    return load_backbone()


def test_item_lines_cut_long_texts_to_the_token_budget(backbone):
    long = "Digital multimeter " + "with auto ranging and a backlit display " * 20
    lines = item_lines({1: "  Short   title ", 2: long}, backbone.tokenizer, 16)
    assert lines[1] == "Short title"
    assert lines[2].endswith(" ...") and long.startswith(lines[2][:-4])
    assert len(backbone.tokenizer(lines[2][:-4], add_special_tokens=False)["input_ids"]) <= 16


def test_an_interrupted_run_resumes_and_ends_with_one_row_per_key(tmp_path, backbone, amazon_dir):
    inter = pd.read_csv(amazon_dir / "interactions.csv")
    items = pd.read_csv(amazon_dir / "items.csv").set_index("item_id")
    histories = [g.sort_values("timestamp")["item_id"].tolist() for _, g in inter[inter["user_id"] < 4].groupby("user_id")]
    lines = item_lines({i: items.loc[i, "title"] for h in histories for i in h}, backbone.tokenizer, 12)
    requests = [request(u, h[:-2]) for u, h in enumerate(histories)]
    settings = GenerationSettings(max_new_tokens=8, batch_size=4)
    real = lambda messages: generate_chat(backbone, messages, settings, system=TEMPLATES.system)  # noqa: E731

    interrupted = FakeLLM(interrupt_after=2, generate=real)
    with pytest.raises(KeyboardInterrupt):  # a Ctrl-C during the third chunk
        run(requests, interrupted, SummaryCache(tmp_path), chunk_size=2, lines=lines)
    kept = SummaryCache(tmp_path).to_frame()
    assert len(kept) == 4 and kept["summary"].str.len().gt(0).all()

    resumed = FakeLLM(generate=real)
    out = run(requests, resumed, SummaryCache(tmp_path), chunk_size=2, lines=lines)
    cache = SummaryCache(tmp_path).to_frame()
    assert set(kept["key"]) <= set(cache["key"]) and cache["key"].is_unique
    assert resumed.n_generated == len(cache) - len(kept)  # nothing finished was redone
    assert set(out["key"]) <= set(cache["key"])

    idle = FakeLLM(generate=real)
    run(requests, idle, SummaryCache(tmp_path), chunk_size=2, lines=lines)
    assert idle.calls == []


KILLED_RUN = """
import sys, time
from llm_seqrec.datasets.summary_cache import SummaryCache
from llm_seqrec.llm.generation import Generation
from llm_seqrec.llm.summarize import Request, Templates, history_blocks, summarize
from llm_seqrec.params import SummaryTemplatesParams

def slow(messages):
    time.sleep(0.3)
    return [Generation("s " + m[-20:], 10, 2, 0.3) for m in messages]

cache = SummaryCache(sys.argv[1])
requests = [Request(u, "valid", tuple(map(tuple, history_blocks(list(range(u * 100, u * 100 + 12)), 5, 4)))) for u in range(1, 9)]
summarize(requests, method="hierarchical", templates=Templates(version="v1", **SummaryTemplatesParams().model_dump()),
          lines={i: f"item {i}" for r in requests for b in r.blocks for i in b}, generate_fn=slow, model="m",
          generation={}, known=cache.summaries(), on_chunk=cache.append, chunk_size=1, progress=False)
print("finished")
"""


def test_a_killed_run_keeps_its_finished_parts(tmp_path):
    folder = tmp_path / "cache"
    process = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(folder)], env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while len(list(folder.glob("part-*.parquet"))) < 3 and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = SummaryCache(folder)
    assert 3 <= len(done) < 8 * 3 + 8  # 8 users x 3 blocks + 8 merges

    second = subprocess.run([sys.executable, "-c", KILLED_RUN, str(folder)], capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    cache = SummaryCache(folder).to_frame()
    assert len(cache) == 32 and cache["key"].is_unique
    assert len(list(folder.glob("part-*.parquet"))) == 32  # one summary per chunk, none written twice


def test_the_cache_dataset_is_valid_when_empty_and_previews_a_table(tmp_path):
    dataset = SummaryCacheDataset(filepath=str(tmp_path / "summary_cache"))
    assert dataset.exists()
    empty = dataset.load()
    assert len(empty) == 0 and list(empty.to_frame().columns) == CACHE_COLUMNS

    run([request(1, range(1, 8))], FakeLLM(), dataset.load())
    frame = dataset.load().to_frame()
    assert len(frame) == 3
    parts = sorted((tmp_path / "summary_cache").glob("part-*.parquet"))
    dataset.save(frame)  # keys already present are not appended again
    assert len(dataset.load()) == 3 and sorted((tmp_path / "summary_cache").glob("part-*.parquet")) == parts

    preview = dataset.preview()
    assert preview["columns"] == CACHE_COLUMNS and len(preview["data"]) == 3
    assert {row[CACHE_COLUMNS.index("item_ids")] for row in preview["data"]} == {"1 2 3 4 5", "6 7", ""}
