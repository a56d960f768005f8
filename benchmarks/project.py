"""The project as the benchmarks see it: its parameters, resolved as `kedro run` resolves them, and a
throwaway copy (pyproject, conf without conf/local, empty data layers) to run pipelines in, so a
benchmark never reads or overwrites anything under the repository's data/."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LLM_SEQREC_SHARED", REPO.parent / "shared"))
AMAZON = SHARED / "datasets" / "amazon-scientific"
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
