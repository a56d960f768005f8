"""Quality against backbone depth for Laser and LLM-TRSR, at one training budget.

    python benchmarks/bench_depth.py                                   # Amazon Scientific, the amazon env's budget, N = 8, 16, 30
    python benchmarks/bench_depth.py --env quick --users 300 --layers 2 30   # the smallest run (tests/test_benchmarks.py)
    python benchmarks/bench_depth.py --set laser.train_users=32 trsr.train_users=32
    python benchmarks/bench_depth.py --project /tmp/depth --layers 8     # then --layers 16, ...: one depth a call
    python benchmarks/bench_depth.py --project /tmp/depth --models laser --depth-set evaluation.llm_user_sample=400

SLMRec (Xu et al. 2024) found most upper layers of an LLM recommender redundant; this measures it here.
In a throwaway project copy (project.py) on the shared Amazon Scientific CSV files, the upstream stages
run once at their configured depth (data_processing, id_pretraining, alignment, summarization: the same
SASRec, aligned items and summaries for every depth), then, for each N, `kedro run --pipelines=bituning`
runs only the train and score nodes of ``laser`` and ``trsr`` (``--models``) with ``--params
<model>.layers=N``: the same users, epochs and settings at every depth. Printed per depth: test NDCG@10
(full ranking, laser) and NDCG@5 (sampled: the target among its negatives, trsr) on the LLM user sample
with its standard error over the users, each node's seconds, and the dtype the backbone ran in; then, for
each model, each depth's paired difference from the deepest one measured (the same users) and its
standard error. ``--set`` applies to every run, ``--depth-set`` to the per-depth runs only (e.g. a larger
``evaluation.llm_user_sample`` for laser, which reads no summaries, where trsr needs one per user).
``--project DIR`` keeps the project copy in DIR and reuses it when it is there (the upstream stages then
do not run again), so a long measurement can be split into several calls; each call keeps its per-user
values in DIR, and the table printed at the end holds every (model, depth) measured there so far.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from llm_seqrec.evaluation.metrics import per_user_metrics, standard_error
from project import AMAZON, copy_project, timed_kedro_run  # benchmarks/ is the script's folder

UPSTREAM = "data_processing,id_pretraining,alignment,summarization"
# model -> (its train node, its score node, the protocol and metric reported)
MODELS = {"laser": ("laser.train_laser", "laser.score_laser", "full", "ndcg@10"),
          "trsr": ("trsr.train_trsr", "trsr.score_trsr", "sampled", "ndcg@5")}
DATASET = "amazon-scientific"
COLUMNS = ["model", "layers", "metric", "users", "train_s", "score_s", "dtype", "depth_set"]


def kedro(project: Path, options: list[str], params: list[str]) -> dict[str, float]:
    """`kedro run` in ``project``; seconds per node. A failed run stops the benchmark with its output."""
    _, nodes, code, tail = timed_kedro_run(project, [*options, f"--params={','.join(params)}"])
    if code != 0:
        print(tail)
        raise SystemExit(f"kedro run {' '.join(options)} failed (exit {code})")
    return nodes


def per_user_test_metric(scores: pd.DataFrame, protocol: str, metric: str) -> tuple[pd.Series, str]:
    """``metric`` per user (indexed by user_idx) over the test rows of ``protocol`` in a score table, and the dtype."""
    rows = scores[(scores["split"] == "test") & (scores["protocol"] == protocol)]
    values = per_user_metrics(rows["rank"].to_numpy(), [10], protocol, rows["n_ranked"].to_numpy())[metric]
    return pd.Series(values, index=rows["user_idx"].to_numpy()).sort_index(), ",".join(sorted(set(scores["backbone_dtype"])))


def record(results: Path, model: str, layers: int, metric: str, values: pd.Series, seconds: tuple[float, float],
           dtype: str, depth_set: list[str]) -> None:
    """Keep one (model, depth)'s per-user values and costs in ``results`` (a folder of the project copy)."""
    results.mkdir(exist_ok=True)
    values.rename("value").rename_axis("user_idx").reset_index().to_parquet(results / f"{model}_{layers}.parquet")
    row = pd.DataFrame([(model, layers, metric, len(values), *seconds, dtype, " ".join(depth_set))], columns=COLUMNS)
    table = results / "runs.csv"
    old = pd.read_csv(table, keep_default_na=False) if table.is_file() else pd.DataFrame(columns=COLUMNS)
    old = old[(old["model"] != model) | (old["layers"] != layers)]
    pd.concat([old, row]).sort_values(["model", "layers"]).to_csv(table, index=False)


def print_tables(results: Path) -> None:
    """Every (model, depth) kept in ``results``: mean ± standard error, and the paired difference from the
    model's deepest measured depth on the users both scored."""
    runs = pd.read_csv(results / "runs.csv", keep_default_na=False)
    print("| model | layers | test metric | value ± s.e. | users | train s | score s | dtype | difference from deepest ± s.e. |\n"
          "|---|---:|---|---:|---:|---:|---:|---|---:|")
    for model, group in runs.groupby("model", sort=False):
        values = {int(n): pd.read_parquet(results / f"{model}_{n}.parquet").set_index("user_idx")["value"] for n in group["layers"]}
        deepest = values[max(values)]
        for r in group.itertuples():
            v = values[int(r.layers)]
            common = v.index.intersection(deepest.index)
            diff = (v.loc[common] - deepest.loc[common]).to_numpy()
            paired = "" if int(r.layers) == max(values) else f"{diff.mean():+.4f} ± {standard_error(diff):.4f} ({len(common)} users)"
            print(f"| {model} | {r.layers} | {r.metric} | {v.mean():.4f} ± {standard_error(v.to_numpy()):.4f} | {r.users} | "
                  f"{r.train_s:.1f} | {r.score_s:.1f} | {r.dtype} | {paired} |")
    extra = sorted({(m, s) for m, s in zip(runs["model"], runs["depth_set"], strict=True) if s})
    if extra:
        print(f"per-depth params: {'; '.join(f'{m}: {s}' for m, s in extra)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=AMAZON, help="folder with interactions.csv and items.csv")
    parser.add_argument("--env", default="amazon", help="configuration environment: the training budget")
    parser.add_argument("--layers", type=int, nargs="*", default=[8, 16, 30], help="depths; none = the upstream stages only")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--users", type=int, help="data_processing.max_users (a seeded sample); default all")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more --params for every run")
    parser.add_argument("--depth-set", nargs="*", default=[], metavar="KEY=VALUE", help="more --params for the per-depth runs")
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
    results = workdir / "results"
    try:
        if not done.is_file():
            shutil.rmtree(project, ignore_errors=True)
            shutil.rmtree(results, ignore_errors=True)
            copy_project(project)
            kedro(project, [f"--env={args.env}", f"--pipelines={UPSTREAM}"], params)
            done.write_text(" ".join(params))
        elif done.read_text() != " ".join(params):
            raise SystemExit(f"{project} was made with other parameters ({done.read_text()}): use another --project")
        nodes = [node for model in args.models for node in MODELS[model][:2]]
        for layers in args.layers:
            depth = [f"{model}.layers={layers}" for model in args.models]
            seconds = kedro(project, [f"--env={args.env}", "--pipelines=bituning", f"--nodes={','.join(nodes)}"],
                            [*params, *args.depth_set, *depth])
            for model in args.models:
                train, score, protocol, metric = MODELS[model]
                table = pd.read_parquet(project / "data" / "07_model_output" / DATASET / f"{model}_scores.parquet")
                values, dtype = per_user_test_metric(table, protocol, metric)
                record(results, model, layers, f"{protocol} {metric}", values, (seconds[train], seconds[score]), dtype, args.depth_set)
                print(f"{model} at {layers} layers: test {protocol} {metric} {values.mean():.4f} ± "
                      f"{standard_error(values.to_numpy()):.4f} ({len(values)} users); "
                      f"train {seconds[train]:.1f} s, score {seconds[score]:.1f} s; dtype {dtype}", flush=True)
        print(f"\nenv {args.env}, users {args.users or 'all'}, extra params {args.set or 'none'}")
        if (results / "runs.csv").is_file():
            print_tables(results)
    finally:
        if keep:
            print(f"\nproject copy kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
