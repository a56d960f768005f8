"""The ``laser`` variant of the bituning stage: Laser Bi-Tuning and its ablations.

Four models, each the same code under its own parameters (``laser`` and ``laser.ablations``):
``laser``, ``laser_no_moe`` (one query expert), ``laser_no_prefix`` (no M-Former prefix, no ID
model) and ``laser_no_stage1`` (item encodings never trained). Each trains into a versioned
``<model>_adapter`` (the trained weights + config) and is scored into ``<model>_scores``: full ranking
over all items and the sampled protocol on ``eval_candidates``, both splits, for the LLM user sample.
The model is ``models.bituning``, its training ``training.bituning``.

A family may also have a preference-tuned model (``fusion_dmpo``: ``fusion.preference``): the trained
full model tuned further by DMPO or S-DPO on its candidate head. The ``fusion`` variant is this
pipeline under family ``fusion`` (``create_family_pipeline``).

Optional inputs, off by default: LLM-TRSR's summaries in the user prompt (``use_summary``) and
RA-Rec's aligned item embeddings as a soft token per item (``prompts.aligned_id_tokens``). Their
datasets are inputs of every node all the same (a Kedro pipeline cannot depend on a parameter), so
the stage runs after summarization and alignment, as in a full ``kedro run``.
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline, pipeline

from llm_seqrec.params import BITUNING_FAMILIES, LaserParams
from llm_seqrec.pipelines import ABLATION

from .nodes import preference_tune, score_laser, train_laser

MODELS = LaserParams.models()
UPSTREAM = ("user_sequences", "item_catalog", "eval_candidates", "sasrec_model", "sasrec_text_model", "user_summaries",
            "aligned_item_embeddings", "score_cache")


def create_variant_pipeline() -> Pipeline:
    return create_family_pipeline("laser")


def create_family_pipeline(family: str) -> Pipeline:
    """The nodes of a Bi-Tuning family (``laser`` or ``fusion``) in its namespace."""
    models = BITUNING_FAMILIES[family].models()
    parameters = (f"params:{family}", "params:evaluation", "params:backbone")
    # Both frozen ID models are inputs (a Kedro pipeline cannot depend on a parameter): ``id_model`` picks one.
    training_inputs = ["user_sequences", "item_catalog", "sasrec_model", "sasrec_text_model", "user_summaries",
                       "aligned_item_embeddings", *parameters]
    scoring_inputs = ["user_sequences", "item_catalog", "eval_candidates", "sasrec_model", "sasrec_text_model",
                      "user_summaries", "aligned_item_embeddings", "score_cache", *parameters]

    def model_nodes(name: str, step: str, train, inputs: list[str], tags: set[str]) -> list[Node]:
        """Node ``<step>_<name>`` trains model ``name`` with ``train``; ``score_<name>`` scores it."""
        return [
            Node(_for_model(train, name, family), inputs, [f"{name}_adapter", f"{name}_training_log"],
                 name=f"{step}_{name}", tags=tags),
            Node(_for_model(score_laser, name, family), [f"{name}_adapter", *scoring_inputs], f"{name}_scores",
                 name=f"score_{name}", tags=tags),
        ]

    nodes = [node for name in models
             for node in model_nodes(name, "train", train_laser, training_inputs, {ABLATION} if name != family else set())]
    tuned = BITUNING_FAMILIES[family].PREFERENCE_MODEL
    if tuned is not None:
        models = (*models, tuned)
        nodes += model_nodes(tuned, "preference_tune", preference_tune, [f"{family}_adapter", *training_inputs], set())
    # Catalog names stay as they are (``laser_adapter``, ``laser_scores``, ...): the evaluation
    # stage reads ``<model>_scores``; the namespace groups the nodes in kedro-viz.
    outputs = {f"{name}_{kind}" for name in models for kind in ("adapter", "scores", "training_log")}
    return pipeline(nodes, namespace=family, inputs=set(UPSTREAM), outputs=outputs, parameters=set(parameters))


def _for_model(func, model: str, family: str):
    """``func`` with ``model`` and ``family`` fixed, as a plain function: Kedro reads node functions'
    type hints, which it cannot from a ``functools.partial`` (it logs a warning per node)."""

    def node_func(*args):
        return func(*args, model=model, family=family)

    node_func.__name__ = node_func.__qualname__ = f"{func.__name__}[{model}]"
    return node_func
