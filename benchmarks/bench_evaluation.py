"""Time full-ranking evaluation (users per second) at ML-1M size: 6,040 users x 3,706 items.

    python benchmarks/bench_evaluation.py                      # synthetic ML-1M-sized histories, SASRec scorer
    python benchmarks/bench_evaluation.py --scorer dot --users 2000
    python benchmarks/bench_evaluation.py --primary data/03_primary/ml-1m --model data/06_models/ml-1m/sasrec/<version>/sasrec

The scorer is SASRec (the default run's ``sasrec`` parameters; untrained unless ``--model`` names a saved
one: ranking cost does not depend on the weights) or ``dot`` (a fixed user x item dot product, which
leaves only the protocol's own cost: exclusion, target rank, top items). Both splits are ranked.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from llm_seqrec.data.padding import left_pad
from llm_seqrec.datasets import TorchWeightsDataset
from llm_seqrec.evaluation.protocol import evaluation_user_sets, full_ranking_rows, metrics_table
from llm_seqrec.models import SASRec, SASRecConfig
from project import parameters  # benchmarks/ is the script's folder


def synthetic_sequences(n_users: int, n_items: int, mean_length: float, seed: int) -> pd.DataFrame:
    """Histories with ML-1M's shape: long-tailed lengths (at least 20) over Zipf-popular items."""
    rng = np.random.default_rng(seed)
    lengths = np.maximum(20, rng.geometric(1 / mean_length, n_users))
    popularity = 1 / np.arange(1, n_items + 1) ** 0.8
    popularity /= popularity.sum()
    histories = [rng.choice(np.arange(1, n_items + 1), size=n, p=popularity) for n in lengths]
    return pd.DataFrame(
        {
            "user_idx": np.arange(1, n_users + 1, dtype=np.int64),
            "user_id": [str(u) for u in range(1, n_users + 1)],
            "train_items": [h[:-2] for h in histories],
            "valid_target": [int(h[-2]) for h in histories],
            "test_target": [int(h[-1]) for h in histories],
        }
    )


def sasrec_scorer(model: SASRec):
    def score(inputs: list[list[int]]) -> torch.Tensor:
        return model.score_items(model.user_state(left_pad(inputs, model.config.max_len)))

    return score


def dot_scorer(n_items: int, dim: int = 64):
    generator = torch.Generator().manual_seed(0)
    items = torch.randn(n_items + 1, dim, generator=generator)

    def score(inputs: list[list[int]]) -> torch.Tensor:
        # A user is the mean of its last 50 item vectors: cheap, and different per user.
        return torch.stack([items[torch.as_tensor(s[-50:])].mean(0) for s in inputs]) @ items.T

    return score


def replay(scores: torch.Tensor):
    """Hands out precomputed score rows in the order the protocol asks for users."""
    position = 0

    def score(inputs: list[list[int]]) -> torch.Tensor:
        nonlocal position
        position += len(inputs)
        return scores[position - len(inputs) : position]

    return score


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=6040)
    parser.add_argument("--items", type=int, default=3706)
    parser.add_argument("--mean-length", type=float, default=165.0, help="mean history length (ML-1M: 165)")
    parser.add_argument("--primary", type=Path, help="folder with user_sequences.parquet instead of synthetic data")
    parser.add_argument("--scorer", choices=["sasrec", "dot"], default="sasrec")
    parser.add_argument("--model", type=Path, help="a saved SASRec folder (config.json + model.safetensors)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--exclude-seen", action="store_true")
    args = parser.parse_args(argv)

    if args.primary is not None:
        sequences = pd.read_parquet(args.primary / "user_sequences.parquet")
        n_items = int(pd.read_parquet(args.primary / "item_catalog.parquet")["item_idx"].max())
    else:
        sequences, n_items = synthetic_sequences(args.users, args.items, args.mean_length, seed=0), args.items
    if args.scorer == "dot":
        score_fn = dot_scorer(n_items)
    elif args.model is not None:
        score_fn = sasrec_scorer(SASRec.from_artifact(TorchWeightsDataset(filepath=str(args.model)).load()).eval())
    else:
        conf = OmegaConf.create(parameters()["sasrec"])
        config = SASRecConfig(n_items=n_items, max_len=conf.max_len, hidden_size=conf.hidden_size,
                              num_blocks=conf.num_blocks, num_heads=conf.num_heads)  # scored in eval mode: no dropout
        score_fn = sasrec_scorer(SASRec(config).eval())
    with torch.no_grad():
        dtype = score_fn([list(sequences["train_items"].iloc[0])]).dtype
    print(f"{len(sequences)} users x {n_items} items; scorer {args.scorer} in {dtype}; batch {args.batch_size}; "
          f"exclude_seen={args.exclude_seen}; torch threads {torch.get_num_threads()}")

    tables = []
    for split in ("valid", "test"):
        start = time.perf_counter()
        tables.append(full_ranking_rows(score_fn, sequences, split, args.exclude_seen, args.batch_size))
        seconds = time.perf_counter() - start
        print(f"{split}: {seconds:.2f} s, {len(sequences) / seconds:,.0f} users/s")

    # The protocol's own share: the same ranking with the model's scores computed beforehand.
    inputs = [list(s) for s in sequences["train_items"]]
    with torch.no_grad():
        cached = torch.cat([score_fn(inputs[i : i + args.batch_size]) for i in range(0, len(inputs), args.batch_size)])
    start = time.perf_counter()
    full_ranking_rows(replay(cached), sequences, "valid", args.exclude_seen, args.batch_size)
    seconds = time.perf_counter() - start
    print(f"protocol only (scores precomputed): {seconds:.2f} s, {len(sequences) / seconds:,.0f} users/s")

    start = time.perf_counter()
    user_sets = evaluation_user_sets(sequences, 200, 42)
    metrics = metrics_table({"model": pd.concat(tables)}, "bench", [1, 5, 10, 20, 100], user_sets)
    print(f"metrics_table: {time.perf_counter() - start:.3f} s, {len(metrics)} rows")


if __name__ == "__main__":
    sys.exit(main())
