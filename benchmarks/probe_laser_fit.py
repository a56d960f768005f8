"""Can Laser fit its own training users? A diagnosis for a Laser that ranks at chance (issue 22).

    python benchmarks/probe_laser_fit.py --project /tmp/depth_amz/project --users 32 --epochs 12 --layers 8

A model that cannot lift full-ranking NDCG@10 on the very users it trains on, given many passes over
them, is broken (a bug, or an architecture that cannot carry the signal); one that fits them quickly but
stays at chance on held-out users is short of training data and steps (the budget). This trains Laser
(the default `laser` section of the project's configuration, stage 1 then stage 2 as the node does) on
``--users`` seeded training examples for ``--epochs`` epochs and validates on THE SAME examples: the
validation frame moves each user's valid cutoff back one item, so its target is the example's training
target and its history the example's. Printed per epoch: the training loss and that training-set
NDCG@10 (full ranking over every item, seen items excluded), against chance (about 1/n_items).

``--project`` is a project copy whose data/ already holds the upstream stages (`data_processing` and
`id_pretraining`; e.g. the one `bench_depth.py --project` keeps): its primary tables and latest SASRec.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from kedro.io import Version

from llm_seqrec.datasets import TorchWeightsDataset
from llm_seqrec.llm.backbone import load_backbone
from llm_seqrec.models.bituning_prompts import BiTuningRanker
from llm_seqrec.params import BackboneParams, LaserParams
from llm_seqrec.training.bituning import fit_stages
from llm_seqrec.training.bituning_data import build, training_examples, validation_users
from llm_seqrec.training.state import seed_everything
from project import parameters  # benchmarks/ is the script's folder


def training_set_as_validation(user_sequences: pd.DataFrame) -> pd.DataFrame:
    """The users' frame with every valid cutoff moved back one item: validating on it scores each user's
    training example (history: the training items before the last; target: the last)."""
    frame = user_sequences.copy()
    frame["valid_target"] = [int(items[-1]) for items in frame["train_items"]]
    frame["train_items"] = [list(items[:-1]) for items in frame["train_items"]]
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, required=True, help="a project copy with the upstream stages run")
    parser.add_argument("--dataset", default="amazon-scientific")
    parser.add_argument("--users", type=int, default=32, help="seeded training examples, trained on and validated on")
    parser.add_argument("--epochs", type=int, default=12, help="in all; the first --stage1-epochs are stage 1")
    parser.add_argument("--stage1-epochs", type=int, default=1)
    parser.add_argument("--layers", type=int, help="the backbone's depth (default: the laser section's)")
    parser.add_argument("--lr", type=float, help="default: the laser section's")
    args = parser.parse_args()

    params = parameters()
    laser = LaserParams.model_validate(params["laser"]).model("laser")
    backbone = BackboneParams.model_validate(params["backbone"])
    data = args.project / "data"
    sequences = pd.read_parquet(data / "03_primary" / args.dataset / "user_sequences.parquet")
    catalog = pd.read_parquet(data / "03_primary" / args.dataset / "item_catalog.parquet")
    sasrec = TorchWeightsDataset(filepath=str(data / "06_models" / args.dataset / "sasrec"), version=Version(None, None)).load()

    seed_everything(laser.training.seed)
    eligible = sequences[sequences["train_items"].map(len) >= 3]  # a training example with a history of >= 2
    chosen = np.sort(np.random.default_rng(laser.training.seed).choice(len(eligible), args.users, replace=False))
    users = eligible.iloc[chosen].reset_index(drop=True)
    llm = load_backbone(**backbone.loader_kwargs(args.layers if args.layers is not None else laser.layers))
    net, prompts, _ = build(llm, catalog, sasrec, pd.DataFrame(), prompts=laser.prompts,
                            mformer=laser.mformer if laser.prefix else None, rec_size=laser.rec_size,
                            n_suffix_tokens=laser.n_suffix_tokens, temperature=laser.temperature,
                            balance_weight=laser.balance_weight)
    ranker = BiTuningRanker(net, prompts, False, llm.dtype_name, laser.score_batch_size, laser.item_batch_size)
    examples = training_examples(users, prompts, None)
    same_users = validation_users(training_set_as_validation(users), prompts, None, None, laser.training.seed)
    if same_users.targets != examples.targets:
        raise SystemExit("the validation frame does not reproduce the training targets")
    training = replace(laser.training, epochs=args.epochs, patience=args.epochs, checkpoint_dir=None,
                       eval_users=None, progress=False, **({"lr": args.lr} if args.lr is not None else {}))
    start = time.perf_counter()
    log = fit_stages(ranker, "laser_fit_probe", examples, same_users, None, training=training,
                     stage1_epochs=args.stage1_epochs, train_users=None, exclude_seen=True)
    minutes = (time.perf_counter() - start) / 60
    print(f"\n{args.users} training users of {args.dataset} ({prompts.n_items} items; chance NDCG@10 "
          f"~{10 / prompts.n_items:.4f} as HR@10), {llm.name} ({llm.n_layers} layers, {llm.dtype_name}), "
          f"lr {training.lr}, {minutes:.1f} min")
    columns = ["stage", "epoch", "examples_seen", "loss", "metric", "seconds"]
    print(log[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
