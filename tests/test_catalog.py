"""The catalog reads well in kedro-viz: every dataset a node writes is persisted at a layer, and
layers follow the data flow (kedro-viz turns layers off when they form a cycle)."""

from __future__ import annotations

import re

import pytest
import yaml
from conftest import REPO

from kedro.framework.project import configure_project

from llm_seqrec.params import FusionParams, LaserParams
from llm_seqrec.pipeline_registry import register_pipelines

LAYER_ORDER = ["raw", "intermediate", "primary", "feature", "model_input", "models", "model_output", "reporting"]


@pytest.fixture(scope="module")
def catalog() -> dict:
    configure_project("llm_seqrec")
    return yaml.safe_load((REPO / "conf" / "base" / "catalog.yml").read_text())


def layer_of(catalog: dict, name: str) -> str | None:
    for pattern, config in catalog.items():
        if pattern.startswith("_"):
            continue
        regex = "^" + re.sub(r"\{[^}]+\}", ".+", re.escape(pattern).replace(r"\{", "{").replace(r"\}", "}")) + "$"
        if pattern == name or ("{" in pattern and re.match(regex, name)):
            return config.get("metadata", {}).get("kedro-viz", {}).get("layer")
    return None


def test_every_output_another_stage_or_a_reader_needs_is_persisted_at_a_layer(catalog):
    """Only a hand-off between two nodes of one stage may stay in memory."""
    stages = {name: pipe for name, pipe in register_pipelines().items() if name not in ("__default__", "full")}
    missing = []
    for stage, pipe in stages.items():
        internal = pipe.all_outputs() & {i for node in pipe.nodes for i in node.inputs}
        read_elsewhere = {i for other, p in stages.items() if other != stage for i in p.inputs()}
        for name in pipe.all_outputs():
            if (name not in internal or name in read_elsewhere) and layer_of(catalog, name) not in LAYER_ORDER:
                missing.append(f"{stage}: {name}")
    assert not missing, f"outputs without a catalog entry and a kedro-viz layer: {missing}"


def test_layers_follow_the_data_flow(catalog):
    pipeline = register_pipelines()["full"]
    backwards = []
    for node in pipeline.nodes:
        for source in node.inputs:
            if source.startswith("params:"):
                continue
            for target in node.outputs:
                before, after = layer_of(catalog, source), layer_of(catalog, target)
                if before and after and LAYER_ORDER.index(before) > LAYER_ORDER.index(after):
                    backwards.append(f"{node.name}: {source} ({before}) -> {target} ({after})")
    assert not backwards, "\n".join(backwards)


def test_the_default_run_leaves_out_exactly_the_ablation_and_cross_domain_models(catalog):
    pipelines = register_pipelines()
    left_out = {node.name for node in pipelines["full"].nodes} - {node.name for node in pipelines["__default__"].nodes}
    ablations = [*LaserParams().ablations, *FusionParams().ablations, "trsr_no_summary"]
    family = {"trsr_no_summary": "trsr"}
    expected = {f"{family.get(m, m.split('_')[0])}.{step}_{m}" for m in ablations for step in ("train", "score")}
    transfer = {f"dmpo_transfer.{node}" for node in (
        "make_training_examples", "train_sft", "compute_reference_logprobs", "score_sft", "train_dmpo", "score_dmpo",
        "train_sdpo", "score_sdpo", "collect_scores", "collect_training_log")}
    assert left_out == expected | transfer
    assert pipelines["__default__"].all_outputs() >= {"metrics", "training_cost", "laser_scores", "fusion_scores", "fusion_dmpo_scores", "trsr_scores"}
