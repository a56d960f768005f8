"""The device check: the quick environment end to end on a device, then the LLM training and scoring
steps timed there against the same steps on the CPU, side by side in one run (ratios), and the peak
GPU memory. Under 8 minutes on one GPU at the defaults.

    python benchmarks/device_check.py                       # --device cuda: the check a GPU machine runs
    python benchmarks/device_check.py --device cpu --pipelines data_processing --users 2   # the dry run

1. `kedro run --env=quick --params=backbone.device=<device>` in a throwaway copy of the project (every
   training node on the device too: `training.device` is `auto`); prints the seconds of each node and
   the rows of metrics.csv. `--pipelines` narrows the run (the dry run: data_processing only).
2. On the shared Amazon set, ``--users`` users: one epoch of LLM-TRSR's yes/no LoRA training
   (``training.lora.fit_yes_no``, batches of 4, 1 negative per positive) and the sampled-protocol
   scoring of the same users (``evaluation.scoring.score_table``: both splits, 1 + 20 candidates each),
   each on the device (the backbone in its `auto` dtype: bf16 on a GPU that has it, and `precision:
   auto`) and on the CPU (float32), a warm-up step first. Prints seconds, the CPU / device ratio, the
   dtypes and the peak GPU memory (torch.cuda.max_memory_allocated) of the device side.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from llm_seqrec.data.negatives import sample_eval_candidates
from llm_seqrec.evaluation.scoring import score_table
from llm_seqrec.llm.backbone import load_backbone
from llm_seqrec.llm.prompts import item_titles
from llm_seqrec.models.llm_recommender import LLMRecommender, LoraSettings, PromptSettings, RecommenderConfig
from llm_seqrec.pipelines.data_processing.nodes import prepare_interactions, split_leave_one_out
from llm_seqrec.training import TrainingConfig
from llm_seqrec.training.lora import cutoff_examples, fit_yes_no
from project import AMAZON, copy_project, timed_kedro_run  # benchmarks/ is the script's folder


def end_to_end(device: str, pipelines: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        project = copy_project(Path(tmp) / "project")
        options = ["--env=quick", f"--params=backbone.device={device}"] + ([f"--pipelines={pipelines}"] if pipelines else [])
        seconds, nodes, code, tail = timed_kedro_run(project, options)
        if code != 0:
            sys.exit(f"the quick run failed (exit {code}):\n{tail}")
        metrics = project / "data" / "08_reporting"
        rows = sum(len(pd.read_csv(f)) for f in metrics.rglob("metrics.csv"))
        print(f"quick run on {device}: {seconds:.1f}s, {len(nodes)} nodes, {rows} rows of metrics.csv")


def llm_steps(device: str, users: pd.DataFrame, catalog: pd.DataFrame, n: int) -> dict[str, float | str | None]:
    """Seconds of one yes/no training epoch and of scoring ``n`` users on ``device``, after a warm-up."""
    llm = load_backbone(dtype="auto", device=device)
    titles = item_titles(catalog, 80)
    config = RecommenderConfig(head="yes_no", backbone=llm.name, lora=LoraSettings(r=8, dropout=0.0),
                               prompt=PromptSettings(recent_items=3, use_summary=False))
    model = LLMRecommender(llm, config, titles)
    examples = cutoff_examples(users, {}, n, 42, what="device check examples")
    n_items = int(catalog["item_idx"].max())
    training = TrainingConfig(epochs=1, batch_size=4, lr=1e-3, checkpoint_dir=None, progress=False, device=device,
                              precision="auto")
    fit_yes_no(model, examples[:4], titles, n_items, 1, training, "warm-up")
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    result = fit_yes_no(model, examples, titles, n_items, 1, training, "device check")
    train = time.perf_counter() - started
    chosen = [e.user_idx for e in examples]
    candidates = sample_eval_candidates(users, n_items, 20, 42)
    score_table(model, users, candidates, users=chosen[:2])  # warm-up
    started = time.perf_counter()
    score_table(model, users, candidates, users=chosen)
    if device == "cuda":
        torch.cuda.synchronize()
    score = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    return {"train": train, "score": score, "dtype": llm.dtype_name, "loss": result.history[-1]["loss"], "peak_mb": peak}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--pipelines", help="narrow the quick run (kedro's --pipelines); default: every default pipeline")
    parser.add_argument("--skip-run", action="store_true", help="leave out the end-to-end quick run")
    parser.add_argument("--users", type=int, default=32, help="users trained on and scored, on each device")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA device (--device cpu for the dry run)")
    if args.device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name()}, bf16 {torch.cuda.is_bf16_supported()}, torch {torch.__version__}")
    print(f"CPU threads: {torch.get_num_threads()}")
    if not args.skip_run:
        end_to_end(args.device, args.pipelines)
    dataset = {"format": "csv", "name": "amazon-scientific", "interactions": AMAZON / "interactions.csv",
               "items": AMAZON / "items.csv"}
    interactions, catalog, _ = prepare_interactions(dataset, {}, {})
    users = split_leave_one_out(interactions)
    cpu = llm_steps("cpu", users, catalog, args.users)
    dev = llm_steps(args.device, users, catalog, args.users)
    print(f"\n{args.users} users; CPU in {cpu['dtype']}, {args.device} in {dev['dtype']}")
    print(f"{'step':28} {'cpu s':>8} {args.device + ' s':>8} {'cpu/' + args.device:>9}")
    for step, label in (("train", "yes/no training epoch"), ("score", "sampled scoring, 2 splits")):
        print(f"{label:28} {cpu[step]:8.2f} {dev[step]:8.2f} {cpu[step] / dev[step]:8.2f}x")
    print(f"last loss: cpu {cpu['loss']:.4f}, {args.device} {dev['loss']:.4f}")
    print("peak GPU memory: " + (f"{dev['peak_mb']:.0f} MiB" if dev["peak_mb"] is not None else "- (no GPU)"))


if __name__ == "__main__":
    main()
