"""Shared fixtures: real data samples, a throwaway copy of the Kedro project, a pipeline runner."""

from __future__ import annotations

import gzip
import json
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

from llm_seqrec.llm.backbone import load_backbone
from llm_seqrec.llm.device import choose_device, choose_dtype, dtype_name
from llm_seqrec.models.llm_recommender import LLMRecommender, LoraSettings, PromptSettings, RecommenderConfig

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


# ---- the shared Amazon sample written as the published Amazon dumps (amazon2018, amazon2023) ----

START = 1_400_000_000  # the sample's timestamps are positions in a history; the dumps get days from here
DUMP_SUFFIXES = {"amazon2018": (".json.gz", "_5.json.gz"), "amazon2023": (".jsonl.gz", ".jsonl.gz")}


def sample_tables(sample: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``interactions.csv`` and ``items.csv`` of ``sample`` as strings."""
    read = {"dtype": str, "keep_default_na": False}
    return pd.read_csv(sample / "interactions.csv", **read), pd.read_csv(sample / "items.csv", **read)


def amazon_review(fmt: str, user: str, item: str, position: int) -> dict:
    """A review line as the release writes it (the fields the reader skips included)."""
    seconds = START + 86_400 * position
    if fmt == "amazon2018":
        return {"overall": 5.0, "verified": True, "reviewTime": "05 13, 2014", "reviewerID": user, "asin": item,
                "reviewerName": "A. Buyer", "reviewText": "Works &amp; fits.", "summary": "Good",
                "unixReviewTime": seconds}
    return {"rating": 5.0, "title": "Good", "text": "Works &amp; fits.", "images": [], "asin": item,
            "parent_asin": item, "user_id": user, "timestamp": seconds * 1000 + 123, "helpful_vote": 0,
            "verified_purchase": True}


def amazon_metadata(fmt: str, row: pd.Series) -> dict:
    """A metadata line of the sample's item ``row``: lists where the release has lists."""
    categories = row["categories"].split(",") if row["categories"] else []
    description = [row["description"]] if row["description"] else []
    if fmt == "amazon2018":
        return {"category": categories, "description": description, "title": row["title"], "also_buy": [],
                "brand": row["brand"], "rank": "1 in Industrial", "asin": row["item_id"], "price": "$9.99"}
    return {"main_category": "Industrial & Scientific", "title": row["title"], "average_rating": 4.5,
            "features": [], "description": description, "price": None, "categories": categories,
            "details": {"Brand": row["brand"]}, "store": row["brand"], "parent_asin": row["item_id"]}


def write_lines(path: Path, records, as_python: bool = False) -> Path:
    """One record a line, gzipped when ``path`` ends in .gz; ``as_python``: as Python literals (single quotes)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as handle:
        for record in records:
            handle.write((repr(record) if as_python else json.dumps(record)) + "\n")
    return path


def write_dump(sample: Path, folder: Path, fmt: str, suffixes: tuple[str, str] | None = None,
               meta_as_python: bool = False) -> tuple[Path, Path]:
    """``sample``'s CSV files as ``fmt``'s reviews and metadata files in ``folder``. Reviews are grouped
    by item, as the 2018 5-core files are, so that the reader must restore each history's order from the
    timestamps. ``suffixes``: (metadata, reviews) file name endings, gzipped by default."""
    inter, items = sample_tables(sample)
    reviews = inter.sort_values(["item_id", "user_id"], kind="stable")
    meta_suffix, reviews_suffix = suffixes or DUMP_SUFFIXES[fmt]
    reviews_path = write_lines(folder / f"Industrial_and_Scientific{reviews_suffix}", (
        amazon_review(fmt, user, item, int(position))
        for user, item, position in zip(reviews["user_id"], reviews["item_id"], reviews["timestamp"], strict=True)
    ))
    meta_path = write_lines(folder / f"meta_Industrial_and_Scientific{meta_suffix}",
                            (amazon_metadata(fmt, row) for _, row in items.iterrows()), as_python=meta_as_python)
    return reviews_path, meta_path


# Item titles and a LoRA recommender with a random, non-zero adapter, shared by the recommender's and its
# training procedures' tests.
TITLES = {1: "Nitrile gloves", 2: "Digital multimeter with probes", 3: "Pipette tips", 4: "Safety goggles",
          5: "Soldering iron kit 60W", 6: "Beaker set"}


def recommender(head: str, **prompt) -> LLMRecommender:
    """A recommender on its own backbone (PEFT edits the backbone in place) with a random, non-zero
    adapter, so the adapter matters in every comparison."""
    llm = load_backbone(dtype="float32", device="cpu")
    model = LLMRecommender(
        llm, RecommenderConfig(head=head, backbone=llm.name, lora=LoraSettings(r=2), prompt=PromptSettings(**prompt)), TITLES
    )
    generator = torch.Generator().manual_seed(0)
    model.load_adapter_state_dict({k: torch.randn(v.shape, generator=generator) * 0.02 for k, v in model.adapter_state_dict().items()})
    return model.eval()
