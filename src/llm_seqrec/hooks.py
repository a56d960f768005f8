"""Project hooks: refuse bad parameters before work starts; name the pipeline behind a missing input."""

from __future__ import annotations

import importlib
import logging

from kedro.framework.hooks import hook_impl
from pydantic import ValidationError

from llm_seqrec.params import ProjectParams

logger = logging.getLogger(__name__)

STAGES = ("data_processing", "id_pretraining", "summarization", "alignment", "bituning", "evaluation")


class ParameterError(ValueError):
    """The run's parameters do not validate."""


def validate_parameters(parameters: dict) -> ProjectParams:
    """Validate the whole parameter tree, naming every offending key."""
    try:
        return ProjectParams.model_validate(parameters)
    except ValidationError as exc:
        problems = "\n".join(
            f"  - {'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
        )
        raise ParameterError(f"Invalid parameters (conf/*/parameters*.yml or --params):\n{problems}") from None


class ParameterValidationHook:
    @hook_impl
    def after_context_created(self, context) -> None:
        validate_parameters(context.params)


class UpstreamCheckHook:
    """Before a run, check every free input of the selected pipeline exists on disk."""

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        missing = []
        for name in sorted(pipeline.inputs()):
            if name.startswith("params:") or name == "parameters":
                continue
            try:
                exists = catalog.exists(name)
            except Exception:  # noqa: BLE001 - a dataset that cannot tell is treated as present
                exists = True
            if not exists:
                missing.append(name)
        if not missing:
            return
        # Kedro's registry holds only the selected pipelines here; each stage module knows its outputs.
        stages = {
            stage: importlib.import_module(f"llm_seqrec.pipelines.{stage}").create_pipeline() for stage in STAGES
        }
        lines = []
        for name in missing:
            makers = [stage for stage in STAGES if name in stages[stage].all_outputs()]
            hint = f"run `kedro run --pipelines={makers[0]}` first" if makers else "it is not made by any pipeline"
            lines.append(f"  - {name}: {hint}")
        raise FileNotFoundError("Upstream datasets are missing:\n" + "\n".join(lines))
