"""Quality against backbone depth (``backbone.layers``) for Laser and LLM-TRSR, at one training budget.

    python benchmarks/bench_depth.py                                   # Amazon Scientific, the amazon env's budget, N = 8, 16, 30
    python benchmarks/bench_depth.py --env quick --users 300 --layers 2 30   # the smallest run (tests/test_benchmarks.py)
    python benchmarks/bench_depth.py --set laser.train_users=32 trsr.train_users=32
    python benchmarks/bench_depth.py --project /tmp/depth --layers 8     # then --layers 16, ...: one depth a call

SLMRec (Xu et al. 2024) found most upper layers of an LLM recommender redundant; this measures it here.
In a throwaway project copy (project.py) on the shared Amazon Scientific CSV files, the upstream stages
run once at full depth (data_processing, id_pretraining, alignment, summarization: the same SASRec, aligned
items and summaries for every depth), then, for each N, `kedro run --pipelines=bituning` runs only the
train and score nodes of ``laser`` and ``trsr`` with ``--params backbone.layers=N``: the same users, epochs
and settings at every depth. Printed per depth: test NDCG@10 (full ranking, laser) and NDCG@5 (sampled:
the target among its negatives, trsr) on the LLM user sample, each node's seconds, and the dtype the
backbone ran in. ``N`` equal to the backbone's layer count is the default run (``backbone.layers: null``).
``--project DIR`` keeps the project copy in DIR and reuses it when it is there (the upstream stages then
do not run again), so a long measurement can be split into several calls.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from llm_seqrec.evaluation.metrics import metrics_from_ranks
from project import AMAZON, copy_project, timed_kedro_run  # benchmarks/ is the script's folder

UPSTREAM = "data_processing,id_pretraining,alignment,summarization"
# model -> (its train node, its score node, the protocol and metric reported)
MODELS = {"laser": ("laser.train_laser", "laser.score_laser", "full", "ndcg@10"),
          "trsr": ("trsr.train_trsr", "trsr.score_trsr", "sampled", "ndcg@5")}
DATASET = "amazon-scientific"


def kedro(project: Path, options: list[str], params: list[str]) -> dict[str, float]:
    """`kedro run` in ``project``; seconds per node. A failed run stops the benchmark with its output."""
    _, nodes, code, tail = timed_kedro_run(project, [*options, f"--params={','.join(params)}"])
    if code != 0:
        print(tail)
        raise SystemExit(f"kedro run {' '.join(options)} failed (exit {code})")
    return nodes


def test_metric(scores: pd.DataFrame, protocol: str, metric: str) -> tuple[float, int, str]:
    """``metric`` over the test rows of ``protocol`` in a score table, their user count and the dtype."""
    rows = scores[(scores["split"] == "test") & (scores["protocol"] == protocol)]
    value = metrics_from_ranks(rows["rank"].to_numpy(), [10], protocol, rows["n_ranked"].to_numpy())[metric]
    return value, len(rows), ",".join(sorted(set(scores["backbone_dtype"])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=AMAZON, help="folder with interactions.csv and items.csv")
    parser.add_argument("--env", default="amazon", help="configuration environment: the training budget")
    parser.add_argument("--layers", type=int, nargs="+", default=[8, 16, 30])
    parser.add_argument("--users", type=int, help="data_processing.max_users (a seeded sample); default all")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more --params for every run")
    parser.add_argument("--keep", action="store_true", help="keep the project copy (its data/ and logs)")
    parser.add_argument("--project", type=Path, help="the project copy to use and keep; reused when it exists")
    args = parser.parse_args()
    params = ["dataset.format=csv", f"dataset.name={DATASET}", f"dataset.interactions={args.data / 'interactions.csv'}",
              f"dataset.items={args.data / 'items.csv'}", *args.set]
    if args.users is not None:
        params.append(f"data_processing.max_users={args.users}")
    workdir = args.project or Path(tempfile.mkdtemp(prefix="bench_depth_"))
    keep = args.keep or args.project is not None
    project = workdir / "project"
    done = project / "upstream.done"  # written once the upstream stages finished in this copy
    rows = []
    try:
        if not done.is_file():
            shutil.rmtree(project, ignore_errors=True)
            copy_project(project)
            kedro(project, [f"--env={args.env}", f"--pipelines={UPSTREAM}"], params)
            done.write_text(" ".join(params))
        elif done.read_text() != " ".join(params):
            raise SystemExit(f"{project} was made with other parameters ({done.read_text()}): use another --project")
        nodes = [node for train, score, _, _ in MODELS.values() for node in (train, score)]
        for layers in args.layers:
            seconds = kedro(project, [f"--env={args.env}", "--pipelines=bituning", f"--nodes={','.join(nodes)}"],
                            [*params, f"backbone.layers={layers}"])
            for model, (train, score, protocol, metric) in MODELS.items():
                table = pd.read_parquet(project / "data" / "07_model_output" / DATASET / f"{model}_scores.parquet")
                value, n_users, dtype = test_metric(table, protocol, metric)
                rows.append((model, layers, f"{protocol} {metric}", value, n_users, seconds[train], seconds[score], dtype))
                print(f"{model} at {layers} layers: test {protocol} {metric} {value:.4f} ({n_users} users); "
                      f"train {seconds[train]:.1f} s, score {seconds[score]:.1f} s; dtype {dtype}", flush=True)
    finally:
        if keep:
            print(f"\nproject copy kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nenv {args.env}, users {args.users or 'all'}, extra params {args.set or 'none'}")
    print("| model | backbone.layers | test metric | value | users | train s | score s | dtype |\n|---|---:|---|---:|---:|---:|---:|---|")
    for model, layers, metric, value, n_users, train_s, score_s, dtype in rows:
        print(f"| {model} | {layers} | {metric} | {value:.4f} | {n_users} | {train_s:.1f} | {score_s:.1f} | {dtype} |")


if __name__ == "__main__":
    main()
