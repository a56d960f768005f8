"""Train SASRec for a fixed number of epochs and report seconds per epoch, peak memory and metrics.

    python benchmarks/bench_sasrec.py --dataset ml-1m --epochs 2
    python benchmarks/bench_sasrec.py --primary data/03_primary/ml-1m --epochs 20 --set hidden_size=128 training.lr=0.002

The model settings are the default run's ``sasrec`` parameters (``--set`` overrides them, dotted below ``sasrec``).
Data: ``--primary DIR`` reads ``user_sequences.parquet`` and ``item_catalog.parquet`` from DIR;
otherwise the data_processing pipeline runs for ``--dataset`` in a throwaway copy of the project.
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

import pandas as pd
import torch
from omegaconf import OmegaConf

from llm_seqrec.evaluation.metrics import metrics_from_ranks
from llm_seqrec.pipelines.id_pretraining.nodes import compute_user_states, score_sasrec, train_sasrec
from project import parameters, processed_tables  # benchmarks/ is the script's folder


def primary_tables(dataset: str, primary: Path | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    if primary is None:
        tables = processed_tables(dataset)
        return tables["user_sequences"], tables["item_catalog"]
    return pd.read_parquet(primary / "user_sequences.parquet"), pd.read_parquet(primary / "item_catalog.parquet")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m", choices=["ml-1m", "ml-100k"])
    parser.add_argument("--primary", type=Path, help="folder with user_sequences.parquet and item_catalog.parquet")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--progress", action="store_true", help="show a progress bar per epoch")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides below sasrec, e.g. training.lr=0.002")
    args = parser.parse_args(argv)

    conf = parameters()
    overrides = {"training": {"epochs": args.epochs, "checkpoint_dir": None, "device": args.device, "progress": args.progress}}
    sasrec = OmegaConf.to_container(OmegaConf.merge(conf["sasrec"], overrides, OmegaConf.from_dotlist(args.set)))
    evaluation = conf["evaluation"]

    user_sequences, item_catalog = primary_tables(args.dataset, args.primary)
    print(f"{args.dataset if args.primary is None else args.primary}: {len(user_sequences)} users, "
          f"{len(item_catalog)} items; torch threads {torch.get_num_threads()}; sasrec {sasrec}")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()

    artifact, log = train_sasrec(user_sequences, item_catalog, sasrec, evaluation)
    print(log.to_string(index=False))
    print(f"seconds/epoch: {log['seconds'].mean():.1f} (mean of {len(log)})")

    states = compute_user_states(artifact, user_sequences, sasrec)
    no_candidates = pd.DataFrame({"user_idx": pd.Series(dtype="int64"), "split": pd.Series(dtype=str), "candidates": []})
    scores = score_sasrec(artifact, states, user_sequences, no_candidates, sasrec, evaluation)
    for split, rows in scores.groupby("split", sort=False):
        m = metrics_from_ranks(rows["rank"].to_numpy(), [10], "full")
        print(f"{split} full ranking (exclude_seen={evaluation['exclude_seen']}): "
              f"NDCG@10 {m['ndcg@10']:.4f}  HR@10 {m['hr@10']:.4f}  MRR {m['mrr']:.4f}")

    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if torch.cuda.is_available():
        print(f"peak CUDA memory allocated: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


if __name__ == "__main__":
    sys.exit(main())
