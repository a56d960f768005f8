"""The project as the benchmarks see it: its parameters, resolved as `kedro run` resolves them, and a
throwaway copy (pyproject, conf without conf/local, empty data layers) to run pipelines in, so a
benchmark never reads or overwrites anything under the repository's data/."""

from __future__ import annotations

import contextlib
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LLM_SEQREC_SHARED", REPO.parent / "shared"))
AMAZON = SHARED / "datasets" / "amazon-scientific"
# A plain one-line log format, so node starts and ends can be read from a run's output stream.
LOGGING = """version: 1
disable_existing_loggers: false
formatters: {plain: {format: "%(message)s"}}
handlers: {console: {class: logging.StreamHandler, formatter: plain, stream: ext://sys.stdout}}
loggers: {kedro: {level: INFO}, llm_seqrec: {level: INFO}}
root: {handlers: [console], level: WARNING}
"""
RUNNING = re.compile(r"^Running node: ([^:]+):")
COMPLETED = re.compile(r"^Completed node: (\S+)")
LAYERS = ["01_raw", "02_intermediate", "03_primary", "04_feature", "05_model_input", "06_models",
          "07_model_output", "08_reporting"]


def parameters() -> dict:
    """Every parameter of the default run (conf/base + conf/local), globals resolved."""
    from kedro.config import OmegaConfigLoader

    from llm_seqrec.settings import CONFIG_LOADER_ARGS

    return OmegaConfigLoader(conf_source=str(REPO / "conf"), **CONFIG_LOADER_ARGS)["parameters"]


def copy_project(project: Path) -> Path:
    """The project's configuration at ``project`` (created), with empty data layers; returns ``project``."""
    project.mkdir(parents=True)
    shutil.copy(REPO / "pyproject.toml", project / "pyproject.toml")
    shutil.copytree(REPO / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    (project / "src").mkdir()
    for layer in LAYERS:
        (project / "data" / layer).mkdir(parents=True)
    # The shared Amazon set is addressed as ../shared from the project root.
    if SHARED.exists() and not (project.parent / "shared").exists():
        (project.parent / "shared").symlink_to(SHARED)
    return project


def processed_tables(dataset: str, max_users: int | None = None) -> dict[str, pd.DataFrame]:
    """Run data_processing on MovieLens ``dataset`` (all users, or a seeded sample of ``max_users``)
    in a throwaway copy; returns its primary and model-input tables by name (``user_sequences``,
    ``item_catalog``, ``eval_candidates``)."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
    with tempfile.TemporaryDirectory() as tmp:
        project = copy_project(Path(tmp) / "project")
        bootstrap_project(project)
        cwd = os.getcwd()
        os.chdir(project)  # the catalog's data/ paths are relative to the working directory
        try:
            runtime = {"dataset": {"format": "movielens", "name": dataset}, "data_processing": {"max_users": max_users}}
            with KedroSession.create(project_path=project, runtime_params=runtime) as session:
                session.run(pipeline_names=["data_processing"])
        finally:
            os.chdir(cwd)
        # Every file of a data set lives under data/<layer>/<dataset>/.
        return {path.stem: pd.read_parquet(path)
                for layer in ("03_primary", "05_model_input")
                for path in sorted((project / "data" / layer / dataset).glob("*.parquet"))}


def timed_kedro_run(project: Path, options: list[str], log: Path | None = None) -> tuple[float, dict[str, float], int, str]:
    """`kedro run <options>` in ``project``; total seconds, seconds per node, exit code, output tail.
    Each node's start is printed as it comes; the whole output is written to ``log`` when given."""
    logging_yml = project / "logging.yml"
    logging_yml.write_text(LOGGING)
    command = [str(Path(sys.executable).with_name("kedro")), "run", *options]
    environment = {**os.environ, "KEDRO_LOGGING_CONFIG": str(logging_yml), "KEDRO_DISABLE_TELEMETRY": "true"}
    print(f"\n$ {' '.join(command[1:])}   (in {project})", flush=True)
    started = time.perf_counter()
    node_seconds: dict[str, float] = {}
    node_started = started  # nodes run one at a time: the last "Running node" is the one completing
    tail: list[str] = []
    with (open(log, "w") if log else contextlib.nullcontext()) as log_file, \
            subprocess.Popen(command, cwd=project, env=environment, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, bufsize=1) as process:
        for line in process.stdout:
            now = time.perf_counter()
            if log_file:
                log_file.write(line)
            tail = (tail + [line])[-40:]
            if match := RUNNING.match(line):  # the node's name without its namespace
                node_started = now
                print(f"  {now - started:7.1f}s  {match.group(1)}", flush=True)
            elif match := COMPLETED.match(line):  # the full name, namespace included
                node_seconds[match.group(1)] = now - node_started
    return time.perf_counter() - started, node_seconds, process.returncode, "".join(tail)


def append_row(path: Path, row: dict) -> None:
    """One trial's ``row`` appended to the CSV at ``path`` (its header first when the file is new)."""
    new = not path.is_file()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
