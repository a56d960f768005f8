"""Project pipelines: one per stage, found by ``find_pipelines``; ``full`` runs them all, and
``__default__`` all but the ablation models (nodes tagged ``ablation``), which the run budget of the
default ``kedro run`` leaves out (``kedro run --pipelines=full`` or a stage's pipeline trains them)."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

from llm_seqrec.pipelines import ABLATION


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = find_pipelines(raise_errors=True)
    everything = sum(pipelines.values(), Pipeline([]))
    pipelines["full"] = everything
    pipelines["__default__"] = everything - everything.only_nodes_with_tags(ABLATION)
    return pipelines
