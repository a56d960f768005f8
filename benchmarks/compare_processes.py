"""The quick run in one process against the same run with every training node in N processes
(`training.processes`, README "Processes, Accelerate and GPUs"): per model and metric both values,
their difference and the row's standard error, which rows are within the tolerance, the wall time of
each run, each trained model's training minutes, and the log lines that name the processes.

    python benchmarks/compare_processes.py                  # processes=1, then 2, then the comparison
    python benchmarks/compare_processes.py --run 1          # one run alone; its results kept in --out
    python benchmarks/compare_processes.py --run 2
    python benchmarks/compare_processes.py --compare        # compare the two runs --out holds

Each run is `kedro run --env=quick --params=training.processes=N` in a throwaway copy of the project
(benchmarks/project.py), one after the other, never side by side; it keeps metrics.csv,
training_cost.csv, the whole log and its wall time under ``--out``/processes-N. Exits non-zero when a
run fails or a row is beyond the tolerance.

The tolerance. A model that trains nothing (popularity, zero-shot: not in training_cost.csv) computes
the same thing in both runs: within 1e-4. A trained model is not a float-rounding comparison in this
environment: every process draws its own dropout masks (`fit` seeds process r with seed + r; SASRec's
dropout is 0.2, the LoRA adapters' 0.05, Laser's 0.1), so N processes train with other masks than one
process, as a re-seeded run does; on top of that the all-reduce sums in another order. A trained row
passes within two standard errors of its value over the evaluated users (the larger of the two runs'
``std_error``, at least 1e-4). On the 8 LLM users that is a wide band (one user's rank flip moves HR@1
by 0.125): those rows show that the run completes and lands where one process does, not agreement in
the weights (tests/training/test_processes.py checks the weights, dropout off).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd

from project import copy_project, timed_kedro_run  # benchmarks/ is the script's folder

KEY = ["dataset", "model", "protocol", "split", "users", "metric"]
UNTRAINED_TOLERANCE = 1e-4
STANDARD_ERRORS = 2.0
PROCESS_LINE = re.compile(r"training in \d+ processes|: process \d+ of \d+")


def run(processes: int, out: Path, pipelines: str | None, extra_params: str | None) -> None:
    """The quick run with ``training.processes=processes``; keeps its results under ``out``/processes-N."""
    folder = out / f"processes-{processes}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    params = f"training.processes={processes}" + (f",{extra_params}" if extra_params else "")
    options = ["--env=quick", f"--params={params}"] + ([f"--pipelines={pipelines}"] if pipelines else [])
    with tempfile.TemporaryDirectory(prefix="compare_processes_") as tmp:
        project = copy_project(Path(tmp) / "project")
        seconds, _, code, tail = timed_kedro_run(project, options, log=folder / "run.log")
        if code != 0:
            print(tail)
            sys.exit(f"kedro run {' '.join(options)} failed (exit {code}); its log: {folder / 'run.log'}")
        reporting = project / "data" / "08_reporting"
        for name in ("metrics.csv", "training_cost.csv"):
            if (reporting / name).exists():
                shutil.copy(reporting / name, folder / name)
    (folder / "run.json").write_text(json.dumps({"command": "kedro run " + " ".join(options), "seconds": seconds}))
    print(f"\nprocesses={processes}: {seconds / 60:.1f} min; results in {folder}")


def load(folder: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame, list[str]]:
    if not (folder / "run.json").exists():
        sys.exit(f"no finished run in {folder}: run this script with --run {folder.name.split('-')[-1]} first")
    if not (folder / "metrics.csv").exists():
        sys.exit(f"{folder}: the run wrote no metrics.csv (its --pipelines must include evaluation)")
    cost = folder / "training_cost.csv"
    lines = [line.rstrip() for line in (folder / "run.log").read_text().splitlines() if PROCESS_LINE.search(line)]
    return (json.loads((folder / "run.json").read_text()), pd.read_csv(folder / "metrics.csv"),
            pd.read_csv(cost) if cost.exists() else pd.DataFrame(columns=["model", "minutes"]), lines)


def compare(out: Path, processes: int) -> bool:
    """Prints the comparison of ``out``/processes-1 with ``out``/processes-N; True when every row passes."""
    one, many = (load(out / f"processes-{n}") for n in (1, processes))
    for (info, _, _, lines), n in ((one, 1), (many, processes)):
        print(f"\n$ {info['command']}: {info['seconds'] / 60:.1f} min; {len(lines)} log lines name the processes")
        for line in lines:
            print(f"  {line}")

    rows = (one[1].assign(order=range(len(one[1])))  # in the 1-process file's order, rows of the other run last
            .merge(many[1], on=KEY, how="outer", suffixes=("_1", "_n"), indicator="present")
            .sort_values("order", kind="stable"))
    trained = set(one[2]["model"]) | set(many[2]["model"])
    rows["difference"] = rows["value_n"] - rows["value_1"]
    rows["std_error"] = rows[["std_error_1", "std_error_n"]].max(axis=1).fillna(0.0)
    rows["trained"] = rows["model"].isin(trained)
    rows["tolerance"] = (rows["std_error"] * STANDARD_ERRORS).clip(lower=UNTRAINED_TOLERANCE).where(
        rows["trained"], UNTRAINED_TOLERANCE)
    rows["ok"] = (rows["present"] == "both") & (rows["difference"].abs() <= rows["tolerance"])

    print(f"\nrows ({len(rows)}): value with 1 process, with {processes}, difference, standard error, tolerance")
    header = f"{'model':16s} {'protocol':8s} {'split':5s} {'users':10s} {'metric':9s} {'1 process':>10s} " \
             f"{f'{processes} proc.':>10s} {'difference':>11s} {'std error':>10s} {'tolerance':>10s}  ok"
    print(header)
    for row in rows.itertuples():
        print(f"{row.model:16s} {row.protocol:8s} {row.split:5s} {row.users:10s} {row.metric:9s} {row.value_1:10.5f} "
              f"{row.value_n:10.5f} {row.difference:+11.5f} {row.std_error:10.5f} {row.tolerance:10.5f}  "
              f"{'yes' if row.ok else 'NO'}")

    minutes_1 = one[2].groupby("model")["minutes"].sum()
    minutes_n = many[2].groupby("model")["minutes"].sum()
    print(f"\n| model | trained | rows | within tolerance | largest abs. difference | largest difference / std error "
          f"| training min, 1 process | training min, {processes} processes |\n|---|---|---:|---:|---:|---:|---:|---:|")
    for model, group in rows.groupby("model", sort=False):
        ratio = (group["difference"].abs() / group["std_error"].where(group["std_error"] > 0)).max()
        minutes = " | ".join(f"{m[model]:.2f}" if model in m else "-" for m in (minutes_1, minutes_n))
        print(f"| {model} | {'yes' if model in trained else 'no'} | {len(group)} | {int(group['ok'].sum())} "
              f"| {group['difference'].abs().max():.2g} | {ratio:.2f} | {minutes} |")
    print(f"\nwall time: 1 process {one[0]['seconds'] / 60:.1f} min, {processes} processes "
          f"{many[0]['seconds'] / 60:.1f} min (ratio {many[0]['seconds'] / one[0]['seconds']:.2f})")
    failed = rows[~rows["ok"]]
    print(f"tolerance: untrained models within {UNTRAINED_TOLERANCE:g}, trained within {STANDARD_ERRORS:g} standard "
          f"errors (at least {UNTRAINED_TOLERANCE:g}): {len(rows) - len(failed)} of {len(rows)} rows pass")
    for row in failed.itertuples():
        only = {"left_only": " (only in the 1-process run)", "right_only": f" (only in the {processes}-process run)"}
        where = only.get(row.present, "")
        print(f"  FAIL {row.model} {row.protocol} {row.split} {row.users} {row.metric}: "
              f"{row.difference:+.5f} beyond {row.tolerance:.5f}{where}")
    print()
    return failed.empty


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=int, action="append", metavar="N",
                        help="run with training.processes=N (repeatable)")
    parser.add_argument("--compare", action="store_true", help="compare the runs --out holds")
    parser.add_argument("--processes", type=int, default=2, help="the N compared with one process (default 2)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "compare_processes")
    parser.add_argument("--pipelines", help="narrow both runs (default: the quick run's default pipelines)")
    parser.add_argument("--params", help="more --params for both runs, e.g. sasrec.dropout=0")
    args = parser.parse_args()
    runs = args.run or ([] if args.compare else [1, args.processes])
    for processes in runs:
        run(processes, args.out, args.pipelines, args.params)
    if (args.compare or not args.run) and not compare(args.out, args.processes):
        sys.exit("rows beyond the tolerance")


if __name__ == "__main__":
    main()
