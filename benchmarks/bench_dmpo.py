"""DMPO's preference step: tokens per second, and what caching the reference log-probabilities saves.

    python benchmarks/bench_dmpo.py                      # the shared Amazon Scientific set, 16 users
    python benchmarks/bench_dmpo.py --users 64 --negatives 3 --max-item-chars 60
    python benchmarks/bench_dmpo.py --primary data/03_primary/amazon-scientific

One epoch of ``fit_preference`` over the users' training examples (policy forward + backward over the
prompt and its 1 + k titles, the reference read from the cache) is timed against
``reference_logprobs`` over the same examples (the no-grad forward that a step would add if it
recomputed πref from a frozen copy of the SFT adapter instead of reading the cache). Reported:
preference-step tokens/s; the per-step ratio (policy + reference) / policy; and the stage ratio for
``dmpo`` and ``sdpo`` over E epochs, which share one cache: recomputing costs 2E reference passes,
caching one. The adapter is freshly initialised: timings do not depend on its weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from llm_seqrec.llm.backbone import load_backbone
from llm_seqrec.llm.prompts import item_titles
from llm_seqrec.data.negatives import sample_negatives
from llm_seqrec.models.llm_recommender import LLMRecommender, PromptSettings, RecommenderConfig
from llm_seqrec.params import DMPOParams
from llm_seqrec.training import TrainingConfig
from llm_seqrec.training.lora import train_cutoff_examples, training_users
from llm_seqrec.training.preference import fit_preference, reference_logprobs
from llm_seqrec.pipelines.data_processing.nodes import prepare_interactions, split_leave_one_out
from project import AMAZON  # benchmarks/ is the script's folder


def tables(data: Path, primary: Path | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    if primary is not None:
        return pd.read_parquet(primary / "user_sequences.parquet"), pd.read_parquet(primary / "item_catalog.parquet")
    dataset = {"format": "csv", "name": data.name, "interactions": data / "interactions.csv", "items": data / "items.csv"}
    interactions, catalog, _ = prepare_interactions(dataset, {}, {})
    return split_leave_one_out(interactions), catalog


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=AMAZON, help="folder with interactions.csv and items.csv")
    parser.add_argument("--primary", type=Path, help="folder with user_sequences.parquet and item_catalog.parquet")
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--negatives", type=int, default=3)
    parser.add_argument("--recent-items", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-item-chars", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=1, help="E in the stage ratio")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    args = parser.parse_args(argv)

    user_sequences, item_catalog = tables(args.data, args.primary)
    params = DMPOParams()
    users = training_users(user_sequences, [], args.users, params.seed)
    generator = torch.Generator().manual_seed(params.seed)
    n_items = int(item_catalog["item_idx"].max())
    examples = [
        dataclasses.replace(ex, negatives=sample_negatives(n_items, {*ex.history, ex.target}, args.negatives, generator))
        for ex in train_cutoff_examples(user_sequences, users)
    ]
    titles = item_titles(item_catalog, args.max_item_chars)

    llm = load_backbone(dtype=args.dtype, device=args.device)
    config = RecommenderConfig(head="likelihood", backbone=llm.name, prompt=PromptSettings(args.recent_items, False))
    model = LLMRecommender(llm, config)
    tokens = sum(
        len(model.prompt_ids([titles[i] for i in ex.history])) + sum(len(model.candidate_ids(titles[i])) for i in (ex.target, *ex.negatives))
        for ex in examples
    )
    print(f"{len(examples)} users, k = {args.negatives}, {tokens} tokens ({tokens / len(examples):.0f} per prompt with its "
          f"{1 + args.negatives} titles); {llm.device}, {llm.dtype}, torch threads {torch.get_num_threads()}")

    started = time.perf_counter()
    reference = reference_logprobs(model, examples, titles)
    reference_seconds = time.perf_counter() - started

    training = TrainingConfig(epochs=1, batch_size=args.batch_size, lr=params.preference.lr, checkpoint_dir=None,
                              progress=False, device=args.device)
    started = time.perf_counter()
    fit_preference(model, examples, titles, reference, "dmpo", params.beta, 0.0, training, "bench_dmpo")
    step_seconds = time.perf_counter() - started

    print(f"preference step (forward + backward, cached πref): {step_seconds:.1f} s, {tokens / step_seconds:.0f} tokens/s")
    print(f"reference pass (no grad, what recomputing adds per step): {reference_seconds:.1f} s, "
          f"{tokens / reference_seconds:.0f} tokens/s")
    print(f"per step: recomputing / caching = {(step_seconds + reference_seconds) / step_seconds:.2f}x")
    e = args.epochs
    recompute = 2 * e * (step_seconds + reference_seconds)
    cached = reference_seconds + 2 * e * step_seconds
    print(f"stage (dmpo + sdpo, {e} epoch{'s' if e > 1 else ''}): recomputing {recompute:.0f} s, caching {cached:.0f} s, "
          f"ratio {recompute / cached:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
