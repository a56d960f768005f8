"""One SASRec training run to early stopping, as the id_pretraining node trains it, with its learning curve
and the project's full-ranking test metrics: the trials behind the default run's SASRec settings (README,
"SASRec in the default run").

    python benchmarks/explore_sasrec_convergence.py --primary data/03_primary/ml-1m \\
        --set training.lr=0.005 --set training.eval_every=1 --set training.patience=3 --out trials.csv

The settings are the default run's ``sasrec`` parameters (``--model sasrec_text`` is not supported: it needs
the item text vectors); ``--set`` overrides them, dotted below ``sasrec`` (``null`` for None). No checkpoints
are written. The row: the overrides, epochs run, how it stopped, the best validation NDCG@10 and its epoch,
test and valid NDCG@10 / HR@10 (full ranking over every item, seen items excluded as evaluation.exclude_seen,
every user) and the minutes of training and validation.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import pandas as pd
import yaml

from llm_seqrec.evaluation.metrics import metrics_from_ranks
from llm_seqrec.evaluation.scoring import score_table
from llm_seqrec.params import EvaluationParams, SASRecParams, validate_section
from llm_seqrec.training.id_model import train_sasrec
from project import append_row, parameters  # benchmarks/ is the script's folder


def settings_with(overrides: list[str]) -> dict:
    section = parameters()["sasrec"]
    section["training"] = {**section["training"], "checkpoint_dir": None, "progress": False}
    for item in overrides:
        key, value = item.split("=", 1)
        *path, leaf = key.split(".")
        node = section
        for part in path:
            node = node[part]
        node[leaf] = yaml.safe_load(value)
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--primary", type=Path, required=True, help="folder with user_sequences / item_catalog parquet")
    parser.add_argument("--set", action="append", default=[], help="a sasrec parameter, dotted: training.lr=0.005")
    parser.add_argument("--out", type=Path, help="CSV the row is appended to")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("llm_seqrec").setLevel(logging.INFO)
    user_sequences = pd.read_parquet(args.primary / "user_sequences.parquet")
    n_items = int(pd.read_parquet(args.primary / "item_catalog.parquet")["item_idx"].max())
    settings = validate_section(SASRecParams, settings_with(args.set))
    exclude_seen = EvaluationParams.model_validate(parameters()["evaluation"]).exclude_seen
    model, result = train_sasrec(user_sequences, n_items, settings, exclude_seen)
    for record in result.history:
        print(f"epoch {record['epoch']:3d}  loss {record['loss']:.4f}  valid "
              f"{'-' if record['metric'] is None else format(record['metric'], '.4f')}  {record['seconds']:.1f}s", flush=True)
    started = time.perf_counter()
    scores = score_table(model.eval(), user_sequences, None, exclude_seen=exclude_seen, batch_size=256)
    row = {"set": " ".join(args.set) or "default", "epochs": len(result.history), "stopped_by": result.stopped_by,
           "best_epoch": result.best_epoch, "best_valid_sample": round(result.best_metric, 4),
           "minutes": round(sum(r["seconds"] for r in result.history) / 60, 2)}
    for split, rows in scores.groupby("split"):
        m = metrics_from_ranks(rows["rank"].to_numpy(), [10], "full")
        row[f"{split}_ndcg10"], row[f"{split}_hr10"] = round(m["ndcg@10"], 4), round(m["hr@10"], 4)
    row["scoring_seconds"] = round(time.perf_counter() - started, 1)
    print(row, flush=True)
    if args.out:
        append_row(args.out, row)


if __name__ == "__main__":
    main()
