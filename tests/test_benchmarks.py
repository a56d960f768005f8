"""The README's benchmark commands run, at the smallest sizes, and print the figures they promise.

The figures themselves are measurements, not tested values; what is tested is that each command
works from a clean checkout (it builds its own data in a throwaway project copy) and reports them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import REPO, SHARED

pytestmark = pytest.mark.slow


def bench(script: str, *args: str) -> str:
    """Run ``benchmarks/<script>`` from the repository root; its standard output."""
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "LLM_SEQREC_SHARED": str(SHARED)},
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def figure(pattern: str, output: str) -> float:
    match = re.search(pattern, output)
    assert match, f"no line matching {pattern!r} in:\n{output}"
    return float(match.group(1).replace(",", ""))


def test_bench_sasrec_prints_seconds_per_epoch_memory_and_full_ranking_metrics():
    out = bench("bench_sasrec.py", "--dataset", "ml-100k", "--epochs", "2",
                "--set", "max_len=50", "training.eval_every=1", "dropout=0")
    for arm in ("before (float32)", "fp32 (float32)", "buckets (float32)"):
        assert figure(rf"{re.escape(arm)}: seconds/epoch: ([\d.]+) \(mean of 2\)", out) > 0
        assert figure(rf"{re.escape(arm)}: seconds/epoch: [\d.]+ \(mean of 2\); peak RSS: (\d+) MiB", out) > 0
    assert figure(r"speed-up fp32 \(float32\) over before \(float32\): ([\d.]+)x", out) > 0
    # today's step on the same batches as the former one (no dropout, whose masks come from another
    # random stream now): the same epoch losses
    assert figure(r"fp32 against before, the same batches: largest per-epoch loss difference ([\d.e+-]+)", out) < 1e-3
    for split in ("valid", "test"):
        assert 0 < figure(rf"{split} full ranking \(exclude_seen=True\): NDCG@10 ([\d.]+)", out) <= 1


def test_bench_evaluation_prints_users_per_second_for_both_splits():
    out = bench("bench_evaluation.py", "--users", "300", "--items", "500", "--scorer", "dot", "--exclude-seen")
    for line in ("valid", "test", r"protocol only \(scores precomputed\)"):
        assert figure(rf"{line}: [\d.]+ s, ([\d,]+) users/s", out) > 0
    assert figure(r"metrics_table: [\d.]+ s, (\d+) rows", out) > 0


def test_bench_zeroshot_shares_the_prefix_with_fewer_positions_and_the_same_scores():
    out = bench("bench_zeroshot.py", "--dataset", "ml-100k", "--users", "2", "--dtype", "float32")
    assert figure(r"ratio \(separate / shared\): ([\d.]+)x positions", out) > 2
    assert figure(r"largest score difference ([\d.e+-]+)", out) < 1e-3


def test_bench_laser_prints_the_bi_tuning_ratio_and_inference_speed():
    out = bench("bench_laser.py", "--users", "4", "--steps", "1", "--items", "500")
    assert figure(r"ratio bi-tuning stage 2 / plain, tokens per second: ([\d.]+)x wall", out) > 0
    assert figure(r"full-ranking inference: ([\d.]+) users/s", out) > 0


def test_bench_depth_prints_quality_and_seconds_per_depth():
    out = bench("bench_depth.py", "--env", "quick", "--users", "300", "--layers", "1", "2")
    for model, metric in (("laser", "full ndcg@10"), ("trsr", "sampled ndcg@5")):
        for layers in (1, 2):
            line = rf"{model} at {layers} layers: test {metric} ([\d.]+) ± [\d.na]+ \(\d+ users\); train [\d.]+ s, score [\d.]+ s; dtype \w+"
            assert 0 <= figure(line, out) <= 1
            assert figure(rf"{model} at {layers} layers: .*; train ([\d.]+) s", out) > 0
        # the table: each depth's paired difference from the deepest one, with its standard error
        assert re.search(rf"\| {model} \| 1 \| {metric} \| [\d.]+ ± [\d.na]+ \| \d+ \| .* \| [+-][\d.]+ ± [\d.na]+ \(\d+ users\) \|", out), out


def test_bench_dmpo_prints_the_saving_of_cached_reference_log_probabilities():
    out = bench("bench_dmpo.py", "--users", "2")
    assert figure(r"preference step \(forward \+ backward, cached πref\): [\d.]+ s, (\d+) tokens/s", out) > 0
    assert figure(r"per step: recomputing / caching = ([\d.]+)x", out) > 1


def test_bench_lora_prints_rates_ratios_and_dtypes_per_arm():
    out = bench("bench_lora.py", "--users", "2", "--candidates", "3", "--arms", "2:1", "2:2/2", "2:2/2:bfloat16")
    for arm in ("layers 2, prompt_batch 1/1, float32 (dtype float32)", "layers 2, prompt_batch 2/2, bfloat16 (dtype bfloat16)"):
        assert figure(rf"{re.escape(arm)}: training ([\d.]+) examples/s", out) > 0
        assert figure(rf"{re.escape(arm)}: training [\d.]+ examples/s \([\d.]+ s\), scoring ([\d.]+) rows/s", out) > 0
    assert figure(r"layers 2, prompt_batch 2/2, float32: training ([\d.]+)x", out) > 0
    # batched scores against one prompt at a time, in float32: float rounding only
    assert figure(r"layers 2, prompt_batch 2/2, float32 against score batch 1: largest score difference ([\d.e+-]+)", out) < 1e-4
    assert figure(r"fp32/bf16 at layers 2, prompt_batch 2/2, bfloat16: bf16 training ([\d.]+)x", out) > 0


def test_bench_summarization_batches_generation_with_identical_outputs():
    out = bench("bench_summarization.py", "--prompts", "2", "--users", "1", "--dtype", "float32")
    match = re.search(r"identical greedy outputs: (\d+)/(\d+) \(one at a time\), (\d+)/(\d+) \(generate\)", out)
    assert match, out
    assert match.group(1) == match.group(2) and match.group(3) == match.group(4), match.group(0)
    assert figure(r"hierarchical: +\d+ summaries in +[\d.]+ s = +([\d.]+) summaries/min", out) > 0


@pytest.mark.parametrize("fmt", ["amazon2018", "amazon2023"])
def test_bench_readers_prints_lines_per_second_and_peak_memory(fmt):
    out = bench("bench_readers.py", "--lines", "20000", "--format", fmt)
    assert figure(r"rows: ([\d,]+) interactions", out) == 20000  # every generated review read
    assert figure(r"\(([\d,]+) metadata lines of unreviewed items skipped\)", out) > 0
    assert figure(r"in [\d.]+ s: ([\d,]+) lines/s", out) > 0
    assert figure(r"peak RSS: ([\d,]+) MiB", out) > 0
    assert figure(r"final tables: ([\d.]+) MiB", out) > 0


def test_device_check_dry_run_times_both_steps_on_the_cpu():
    out = bench("device_check.py", "--device", "cpu", "--pipelines", "data_processing", "--users", "2")
    assert re.search(r"quick run on cpu: [\d.]+s, 3 nodes", out), out
    assert "CPU in float32, cpu in float32" in out
    assert figure(r"yes/no training epoch +[\d.]+ +[\d.]+ +([\d.]+)x", out) > 0
    assert figure(r"sampled scoring, 2 splits +[\d.]+ +[\d.]+ +([\d.]+)x", out) > 0
    assert "peak GPU memory: - (no GPU)" in out
