"""Run budgets: the wall time of a whole `kedro run` from empty data folders, per configuration
environment, against its budget, with the time of every node and stage.

    python benchmarks/bench_run_budget.py                 # the quick env (budget 5 min), then the default (30 min)
    python benchmarks/bench_run_budget.py --env quick
    python benchmarks/bench_run_budget.py --env local --pipelines full --budget 0   # every model, no budget

Each run works in a throwaway copy of the project (pyproject + conf, empty data layers, tracking as
configured), so nothing under data/ is read or overwritten and no checkpoint is resumed. The runs go
one after the other, never side by side (two CPU-heavy runs on 2 cores slow each other many times
over). The de-quantised SmolLM2 weights (~/.cache/llm_seqrec) are reused when present, as they are after
`make setup`; a cold cache adds its one-off ~25 s.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

import pandas as pd

from llm_seqrec.pipelines import STAGES, stage_pipelines
from project import copy_project, timed_kedro_run  # benchmarks/ is the script's folder

BUDGET_MINUTES = {"quick": 5, "local": 30}  # `local` is the default run's environment (base + local)


def run_dtypes(project: Path) -> str:
    """The dtypes the run's LLM models computed in, as its metrics.csv files record them."""
    found = {part for path in (project / "data" / "08_reporting").rglob("metrics.csv")
             for value in pd.read_csv(path)["backbone_dtype"].dropna().astype(str) for part in value.split(",") if part}
    return ", ".join(sorted(found)) or "none (no LLM model ran)"


def stage_of_nodes() -> dict[str, str]:
    """Node name -> the stage pipeline that holds it."""
    return {node.name: stage for stage, pipe in stage_pipelines().items() for node in pipe.nodes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", action="append", help="configuration environment (repeatable); default: quick, then local")
    parser.add_argument("--pipelines", default="__default__")
    parser.add_argument("--budget", type=float, help="minutes; default 5 for quick, 30 for local, else none")
    parser.add_argument("--keep", action="store_true", help="keep the project copies (their data/, and each run's whole output in <env>.log)")
    args = parser.parse_args()
    envs = args.env or ["quick", "local"]
    stages = stage_of_nodes()
    workdir = Path(tempfile.mkdtemp(prefix="bench_run_budget_"))
    results = []
    try:
        for env in envs:
            project = copy_project(workdir / env)
            seconds, nodes, code, tail = timed_kedro_run(project, [f"--env={env}", f"--pipelines={args.pipelines}"],
                                                         log=workdir / f"{env}.log" if args.keep else None)
            if code != 0:
                print(tail)
                raise SystemExit(f"kedro run --env={env} failed (exit {code})")
            budget = args.budget if args.budget is not None else BUDGET_MINUTES.get(env)
            results.append((env, seconds, budget))
            per_stage: dict[str, float] = defaultdict(float)
            for name, node_time in nodes.items():
                per_stage[stages.get(name, "?")] += node_time
            print(f"\n{env}: {seconds / 60:.1f} min in all; backbone dtype {run_dtypes(project)}; per stage (minutes):")
            for stage in STAGES:
                if stage in per_stage:
                    print(f"  {stage:16s} {per_stage[stage] / 60:6.2f}")
            print(f"  {'(start, loading)':16s} {(seconds - sum(nodes.values())) / 60:6.2f}")
            print("slowest nodes (minutes):")
            for name, node_time in sorted(nodes.items(), key=lambda item: -item[1])[:12]:
                print(f"  {name:45s} {node_time / 60:6.2f}")
    finally:
        if args.keep:
            print(f"\nproject copies kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print("\n| environment | pipelines | wall time | budget | within |\n|---|---|---:|---:|---|")
    for env, seconds, budget in results:
        within = "" if not budget else ("yes" if seconds <= budget * 60 else "no")
        budget_text = f"{budget:g} min" if budget else "-"
        print(f"| {env} | {args.pipelines} | {seconds / 60:.1f} min | {budget_text} | {within} |")


if __name__ == "__main__":
    main()
