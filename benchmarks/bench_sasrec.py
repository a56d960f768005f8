"""Train SASRec for a fixed number of epochs and report seconds per epoch, peak memory and metrics.

    python benchmarks/bench_sasrec.py --dataset ml-1m --epochs 2
    python benchmarks/bench_sasrec.py --primary data/03_primary --epochs 20 --set hidden_size=128 training.lr=0.002

The model settings are ``sasrec`` from conf/base (``--set`` overrides them, dotted below ``sasrec``).
Data: ``--primary DIR`` reads ``user_sequences.parquet`` and ``item_catalog.parquet`` from DIR;
otherwise the data_processing pipeline runs for ``--dataset`` in a throwaway copy of the project.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch
from omegaconf import OmegaConf

from llm_seqrec.evaluation.metrics import metrics_from_ranks
from llm_seqrec.pipelines.id_pretraining.nodes import compute_user_states, score_sasrec, train_sasrec

REPO = Path(__file__).resolve().parents[1]


def processed_tables(dataset: str, primary: Path | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    if primary is None:
        with tempfile.TemporaryDirectory() as tmp:
            return processed_tables(dataset, run_data_processing(dataset, Path(tmp)))
    return pd.read_parquet(primary / "user_sequences.parquet"), pd.read_parquet(primary / "item_catalog.parquet")


def run_data_processing(dataset: str, project: Path) -> Path:
    """Run the data_processing pipeline in a copy of the project at ``project``; returns its 03_primary."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
    shutil.copy(REPO / "pyproject.toml", project / "pyproject.toml")
    shutil.copytree(REPO / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    (project / "src").mkdir()
    bootstrap_project(project)
    cwd = os.getcwd()
    os.chdir(project)  # the catalog's data/ paths are relative to the working directory
    try:
        runtime = {"dataset": {"format": "movielens", "name": dataset}}
        with KedroSession.create(project_path=project, runtime_params=runtime) as session:
            session.run(pipeline_names=["data_processing"])
    finally:
        os.chdir(cwd)
    return project / "data" / "03_primary"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m", choices=["ml-1m", "ml-100k"])
    parser.add_argument("--primary", type=Path, help="folder with user_sequences.parquet and item_catalog.parquet")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--progress", action="store_true", help="show a progress bar per epoch")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides below sasrec, e.g. training.lr=0.002")
    args = parser.parse_args(argv)

    conf = OmegaConf.load(REPO / "conf/base/parameters_id_pretraining.yml").sasrec
    overrides = {"training": {"epochs": args.epochs, "checkpoint_dir": None, "device": args.device, "progress": args.progress}}
    sasrec = OmegaConf.to_container(OmegaConf.merge(conf, overrides, OmegaConf.from_dotlist(args.set)))
    evaluation = OmegaConf.to_container(OmegaConf.load(REPO / "conf/base/parameters_evaluation.yml").evaluation)

    user_sequences, item_catalog = processed_tables(args.dataset, args.primary)
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
