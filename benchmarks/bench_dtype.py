"""float32 against bfloat16 for the LLM stages: what bf16 does to the results, and what it saves.

    python benchmarks/bench_dtype.py                    # the default run (MovieLens-1M, 32 LLM users)
    python benchmarks/bench_dtype.py --env quick        # the quick environment (minutes)

Three runs, one after the other, each in a throwaway project copy from empty data folders:

1. ``bfloat16``: the run with ``backbone.dtype=bfloat16`` (forced, so it runs on a CPU without native
   bf16 too, where it is several times slower);
2. ``float32``: the same run with ``backbone.dtype=float32``;
3. ``float32, scored in bf16``: run 2's trained models and summaries, only the LLM scoring nodes re-run
   with ``backbone.dtype=bfloat16``, which isolates what bf16 does to scoring alone.

For every LLM model it prints the metric differences (test split, the LLM user sample) and the agreement
of the rankings (sampled protocol: Spearman correlation of each row's candidate scores, the same top-1
candidate; full ranking: Spearman of the targets' ranks, overlap of the top 10), the share of identical
summaries (generation), and the seconds per use (training, scoring, generation) with the fp32/bf16 ratio.
The ID models (SASRec) and popularity do not depend on the backbone's dtype and agree exactly.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from llm_seqrec.llm.device import cpu_has_fast_bf16
from llm_seqrec.pipelines import LEFT_OUT_OF_DEFAULT_RUN, stage_pipelines
from project import copy_project, parameters, timed_kedro_run  # benchmarks/ is the script's folder

METRICS = [("sampled", "hr@1"), ("sampled", "ndcg@5"), ("sampled", "auc"), ("full", "ndcg@10"), ("full", "hr@100")]
KEY = ["user_idx", "split", "protocol"]


def llm_nodes() -> dict[str, str]:
    """Node name -> its use (``generation``, ``scoring``, ``training``) for the default run's nodes that
    run the backbone."""
    pipelines = stage_pipelines()
    uses = {}
    for stage, pipe in pipelines.items():
        pipe = pipe - pipe.only_nodes_with_tags(*LEFT_OUT_OF_DEFAULT_RUN)
        for node in pipe.nodes:
            if "params:backbone" not in node.inputs:
                continue
            if stage == "summarization":
                uses[node.name] = "generation"
            elif any(out.endswith("_scores") for out in node.outputs):
                uses[node.name] = "scoring"
            else:
                uses[node.name] = "training"
    return uses


def run_arm(project: Path, env: str, pipelines: str, dtype: str, nodes: list[str] | None = None) -> dict[str, float]:
    options = [f"--env={env}", f"--pipelines={pipelines}", f"--params=backbone.dtype={dtype}"]
    if nodes:
        options.append("--nodes=" + ",".join(nodes))
    seconds, node_seconds, code, tail = timed_kedro_run(project, options)
    if code != 0:
        print(tail)
        raise SystemExit(f"kedro run {' '.join(options)} failed (exit {code})")
    print(f"  {dtype}: {seconds / 60:.1f} min")
    return node_seconds


def score_tables(folder: Path) -> dict[str, pd.DataFrame]:
    """Model -> its score rows (a table with a ``model`` column, as the few-shot sweep's, holds several)."""
    tables = {}
    for path in sorted(folder.glob("*_scores.parquet")):
        table = pd.read_parquet(path).drop(columns="backbone_dtype", errors="ignore")
        if "model" in table.columns:
            tables.update({model: rows.drop(columns="model").reset_index(drop=True) for model, rows in table.groupby("model")})
        elif len(table):
            tables[path.name.removesuffix("_scores.parquet")] = table
    return tables


def agreement(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, float]:
    """How alike two score tables of one model rank (rows matched by user, split and protocol)."""
    rows = a.merge(b, on=KEY, suffixes=("_a", "_b"))
    out = {}
    sampled = rows[rows["protocol"] == "sampled"]
    if len(sampled):
        pairs = [(np.asarray(x), np.asarray(y)) for x, y in zip(sampled["candidate_scores_a"], sampled["candidate_scores_b"], strict=True)]
        out["spearman_candidates"] = float(np.nanmean([spearmanr(x, y).statistic for x, y in pairs]))
        out["same_top1"] = float(np.mean([x.argmax() == y.argmax() for x, y in pairs]))
        out["max_score_diff"] = float(max(np.abs(x - y).max() for x, y in pairs))
    full = rows[rows["protocol"] == "full"]
    if len(full):
        out["spearman_target_rank"] = float(spearmanr(full["rank_a"], full["rank_b"]).statistic)
        out["top10_overlap"] = float(np.mean([len(set(x[:10]) & set(y[:10])) / 10 for x, y in zip(full["top_items_a"], full["top_items_b"], strict=True)]))
    return out


def metric_values(metrics: pd.DataFrame, model: str) -> dict[str, float]:
    rows = metrics[(metrics["model"] == model) & (metrics["split"] == "test") & (metrics["users"] != "all")]
    if rows.empty:  # a model scored on all users only
        rows = metrics[(metrics["model"] == model) & (metrics["split"] == "test")]
    values = {(p, m): v for p, m, v in zip(rows["protocol"], rows["metric"], rows["value"], strict=True)}
    return {f"{p} {m}": values[(p, m)] for p, m in METRICS if (p, m) in values}


def compare(label: str, bf16: dict[str, pd.DataFrame], fp32: dict[str, pd.DataFrame],
            bf16_metrics: pd.DataFrame, fp32_metrics: pd.DataFrame, models: list[str]) -> None:
    print(f"\n### {label}\n")
    header = ["model", *[f"Δ {p} {m}" for p, m in METRICS], "Spearman (candidates)", "same top-1",
              "Spearman (target rank)", "top-10 overlap"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for model in models:
        a, b = metric_values(bf16_metrics, model), metric_values(fp32_metrics, model)
        deltas = [f"{a[k] - b[k]:+.3f}" if k in a and k in b else "" for k in (f"{p} {m}" for p, m in METRICS)]
        agree = agreement(bf16[model], fp32[model])
        cells = [f"{agree[k]:.3f}" if k in agree else "" for k in ("spearman_candidates", "same_top1", "spearman_target_rank", "top10_overlap")]
        print("| " + " | ".join([model, *deltas, *cells]) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="local", help="configuration environment (default: the default run's)")
    parser.add_argument("--pipelines", default="__default__")
    parser.add_argument("--workdir", type=Path, help="keep the project copies here (default: a temporary folder, removed)")
    args = parser.parse_args()
    print(f"CPU with native bf16: {cpu_has_fast_bf16()}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_dtype_"))
    dataset = parameters()["dataset"]["name"] if args.env == "local" else None
    uses = llm_nodes()
    try:
        seconds = {}
        projects = {dtype: copy_project(workdir / dtype) for dtype in ("bfloat16", "float32")}
        for dtype, project in projects.items():
            seconds[dtype] = run_arm(project, args.env, args.pipelines, dtype)
        dataset = dataset or next((projects["float32"] / "data" / "07_model_output").iterdir()).name
        outputs = {dtype: project / "data" / "07_model_output" / dataset for dtype, project in projects.items()}
        reporting = {dtype: project / "data" / "08_reporting" for dtype, project in projects.items()}
        fp32_scores, fp32_metrics = score_tables(outputs["float32"]), pd.read_csv(reporting["float32"] / "metrics.csv")
        bf16_scores, bf16_metrics = score_tables(outputs["bfloat16"]), pd.read_csv(reporting["bfloat16"] / "metrics.csv")

        scoring = [name for name, use in uses.items() if use == "scoring"]
        run_arm(projects["float32"], args.env, args.pipelines, "bfloat16", nodes=[*scoring, "compute_metrics"])
        rescored, rescored_metrics = score_tables(outputs["float32"]), pd.read_csv(reporting["float32"] / "metrics.csv")

        models = sorted(fp32_scores)
        exact = [m for m in models if fp32_scores[m].equals(bf16_scores[m])]
        llm_models = [m for m in models if m not in exact]
        print(f"\n## {dataset}, env {args.env}: float32 against bfloat16\n")
        print(f"identical in both runs (no backbone): {', '.join(exact)}")
        compare("trained and scored in bf16 against in float32 (training + scoring)", bf16_scores, fp32_scores,
                bf16_metrics, fp32_metrics, llm_models)
        compare("float32-trained models scored in bf16 against in float32 (scoring alone)", rescored, fp32_scores,
                rescored_metrics, fp32_metrics, [m for m in llm_models if not rescored[m].equals(fp32_scores[m])])

        summaries = {dtype: pd.read_parquet(project / "data" / "04_feature" / dataset / "user_summaries.parquet")
                     for dtype, project in projects.items()}
        texts = summaries["bfloat16"].merge(summaries["float32"], on=["user_idx", "cutoff"], suffixes=("_bf16", "_fp32"))
        print(f"\ngeneration: {int((texts['summary_bf16'] == texts['summary_fp32']).sum())}/{len(texts)} user summaries identical")

        print("\n| use | float32 s | bfloat16 s | ratio fp32/bf16 |\n|---|---:|---:|---:|")
        for use in ("generation", "training", "scoring"):
            per_dtype = defaultdict(float)
            for dtype, nodes in seconds.items():
                per_dtype[dtype] = sum(s for name, s in nodes.items() if uses.get(name) == use)
            print(f"| {use} | {per_dtype['float32']:.0f} | {per_dtype['bfloat16']:.0f} | {per_dtype['float32'] / max(per_dtype['bfloat16'], 1e-9):.2f}x |")
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
