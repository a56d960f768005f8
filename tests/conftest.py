"""Shared fixtures: real data samples, a throwaway copy of the Kedro project, a pipeline runner."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from llm_seqrec.llm.device import choose_device, choose_dtype, dtype_name

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LLM_SEQREC_SHARED", REPO.parent / "shared"))
AMAZON = SHARED / "datasets" / "amazon-scientific"
# The dtype the backbone runs in under ``backbone.dtype: auto`` on this machine, as tables record it.
AUTO_DTYPE = dtype_name(choose_dtype(choose_device()))
LAYERS = ["01_raw", "02_intermediate", "03_primary", "04_feature", "05_model_input", "06_models",
          "07_model_output", "08_reporting"]


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def amazon_dir() -> Path:
    if not (AMAZON / "interactions.csv").is_file():
        pytest.fail(f"the shared Amazon Scientific set is missing at {AMAZON} (set LLM_SEQREC_SHARED)")
    return AMAZON


@pytest.fixture(scope="session")
def amazon_sample(tmp_path_factory, amazon_dir) -> Path:
    """The first 300 users of the shared Amazon set and the items they touch, as CSV files."""
    out = tmp_path_factory.mktemp("amazon_sample")
    inter = pd.read_csv(amazon_dir / "interactions.csv")
    users = sorted(inter["user_id"].unique())[:300]
    inter = inter[inter["user_id"].isin(users)]
    items = pd.read_csv(amazon_dir / "items.csv")
    items = items[items["item_id"].isin(inter["item_id"].unique())]
    inter.to_csv(out / "interactions.csv", index=False)
    items.to_csv(out / "items.csv", index=False)
    return out


def make_kedro_project(root: Path) -> Path:
    """A throwaway copy of the project (pyproject + conf) with empty data layers, in ``root``."""
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    shutil.copytree(REPO / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir(exist_ok=True)
    (root / "src").mkdir()  # bootstrap_project wants the source folder; the package itself is installed
    for layer in LAYERS:
        (root / "data" / layer).mkdir(parents=True)
    return root


@pytest.fixture
def kedro_project(tmp_path) -> Path:
    return make_kedro_project(tmp_path)


def layer_path(project: Path, layer: str, name: str, dataset: str = "amazon-scientific") -> Path:
    """Where the catalog puts ``name`` of ``dataset`` in ``layer`` (data/<layer>/<dataset>/<name>)."""
    return project / "data" / layer / dataset / name


def run_kedro(project: Path, pipelines: list[str], params: dict | None = None, env: str = "quick", **run_kwargs):
    """Run pipelines of the project copy in-process, through a SequentialRunner."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    from kedro.runner import SequentialRunner

    os.environ["KEDRO_DISABLE_TELEMETRY"] = "true"
    bootstrap_project(project)
    cwd = os.getcwd()
    os.chdir(project)
    try:
        with KedroSession.create(project_path=project, env=env, runtime_params=params or {}) as session:
            return session.run(pipeline_names=pipelines, runner=SequentialRunner(), **run_kwargs)
    finally:
        os.chdir(cwd)


def csv_params(sample: Path, name: str = "amazon-scientific") -> dict:
    """Runtime params reading ``sample``'s CSV files. Nested: ``KedroSession.create`` takes
    ``runtime_params`` as they are, so a dotted key ("dataset.format") would stay one unknown
    top-level key; only ``kedro run --params`` expands dots."""
    return {
        "dataset": {
            "format": "csv",
            "name": name,
            "interactions": str(sample / "interactions.csv"),
            "items": str(sample / "items.csv"),
        }
    }


def dotted(params: dict, prefix: str = "") -> list[str]:
    """Nested runtime params as the ``key.sub=value`` pairs that ``kedro run --params`` takes."""
    pairs = []
    for key, value in params.items():
        if isinstance(value, dict):
            pairs += dotted(value, f"{prefix}{key}.")
        else:
            pairs.append(f"{prefix}{key}={value}")
    return pairs


def kedro_run(project: Path, pipeline: str, params: dict, extra: list[str] = (), options: list[str] = ()) -> subprocess.Popen:
    """``kedro run --env=quick`` as a user types it, in its own process group (so a kill reaches every
    process it started); ``extra`` are further ``key=value`` params, ``options`` further CLI options."""
    kedro = Path(sys.executable).with_name("kedro")
    command = [str(kedro), "run", "--env=quick", f"--pipelines={pipeline}",
               "--params=" + ",".join(dotted(params) + list(extra)), *options]
    return subprocess.Popen(command, cwd=project, env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-3000:]
    return output
