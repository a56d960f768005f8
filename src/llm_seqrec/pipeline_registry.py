"""Project pipelines, found by ``find_pipelines``: one per stage, ``full`` (every stage, every model),
and ``__default__``: ``full`` without the ablation and cross-domain models (nodes tagged ``ablation``
or ``transfer``), which the run budget of the default ``kedro run`` leaves out (``--pipelines=full`` or a
stage's pipeline trains them)."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

from llm_seqrec.pipelines import LEFT_OUT_OF_DEFAULT_RUN


def register_pipelines() -> dict[str, Pipeline]:
    # Kedro finds only the requested pipelines' packages; `full` is among them when all are loaded.
    pipelines = find_pipelines(raise_errors=True)
    if "full" in pipelines:
        everything = pipelines["full"]
        pipelines["__default__"] = everything - everything.only_nodes_with_tags(*LEFT_OUT_OF_DEFAULT_RUN)
    return pipelines
