"""Project hooks: refuse bad parameters before work starts; name the pipeline behind a missing input;
track runs and trained models in MLflow."""

from __future__ import annotations

import logging
import math
import os
import re
from typing import Any

import pandas as pd
from kedro.framework.hooks import hook_impl
from kedro.io import AbstractVersionedDataset
from pydantic import ValidationError

from llm_seqrec.params import DatasetParams, ProjectParams, TrackingParams
from llm_seqrec.pipelines import stage_pipelines

logger = logging.getLogger(__name__)



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
        stages = stage_pipelines()
        lines = []
        for name in missing:
            makers = [stage for stage, pipe in stages.items() if name in pipe.all_outputs()]
            hint = f"run `kedro run --pipelines={makers[0]}` first" if makers else "it is not made by any pipeline"
            lines.append(f"  - {name}: {hint}")
        raise FileNotFoundError("Upstream datasets are missing:\n" + "\n".join(lines))


class MlflowTrackingHook:
    """kedro-mlflow's hook (one MLflow run per ``kedro run``: its parameters and tags), switched on and
    off by the ``tracking.mlflow`` parameter, plus one nested run per trained model: its parameter
    sections, each epoch's loss, validation metric and seconds, its training cost and the paths of the
    artifacts its node wrote.

    A trained model is recognised by its ``<model>_training_log`` output (a few-shot sweep's log holds
    several models: a nested run each). settings.py disables kedro-mlflow's own registration, so that a
    parameter can turn tracking off; mlflow is imported only when tracking is on.
    """

    def __init__(self) -> None:
        self._mlflow_hook = None  # kedro-mlflow's MlflowHook, while tracking is on
        self._dataset = ""
        self._save_version = ""

    @hook_impl
    def after_context_created(self, context) -> None:
        # One instance serves every session of the process: reset what the last one left.
        self._mlflow_hook = None
        self._dataset = DatasetParams.model_validate(context.params.get("dataset", {})).name
        if not TrackingParams.model_validate(context.params.get("tracking", {})).mlflow:
            return
        # MLflow 3 refuses its file store (conf/base/mlflow.yml: mlruns/) unless told it is wanted;
        # a database URI in conf/local/mlflow.yml needs no such switch.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from kedro_mlflow.framework.hooks.mlflow_hook import MlflowHook

        self._mlflow_hook = MlflowHook()
        self._mlflow_hook.after_context_created(context=context)

    @hook_impl
    def after_catalog_created(self, catalog, conf_catalog, conf_creds, parameters, save_version, load_versions) -> None:
        self._save_version = save_version
        if self._mlflow_hook is not None:
            self._mlflow_hook.after_catalog_created(
                catalog=catalog, conf_catalog=conf_catalog, conf_creds=conf_creds, parameters=parameters,
                save_version=save_version, load_versions=load_versions,
            )

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        if self._mlflow_hook is not None:
            self._mlflow_hook.before_pipeline_run(run_params=run_params, pipeline=pipeline, catalog=catalog)

    @hook_impl
    def before_node_run(self, node, catalog, inputs, is_async) -> None:
        if self._mlflow_hook is not None:
            self._mlflow_hook.before_node_run(node=node, catalog=catalog, inputs=inputs, is_async=is_async)

    @hook_impl
    def after_node_run(self, node, catalog, inputs, outputs) -> None:
        if self._mlflow_hook is None:
            return
        logs = {name: log for name, log in outputs.items()
                if name.endswith("_training_log") and isinstance(log, pd.DataFrame) and not log.empty}
        # A node that takes training logs in (dmpo_transfer's collect_training_log) passes them on; it trains nothing.
        if not logs or any(name.endswith("_training_log") for name in inputs):
            return
        params = _flat({name.removeprefix("params:"): value for name, value in inputs.items() if name.startswith("params:")})
        # The model as built (SASRec's `dropout: auto` resolved, say): each trained artifact's config.
        params |= _flat({f"{name}.config": value["config"] for name, value in outputs.items()
                         if isinstance(value, dict) and isinstance(value.get("config"), dict)})
        artifacts = {name: path for name in outputs if name not in logs and (path := _artifact_path(catalog, name))}
        from llm_seqrec.evaluation.report import training_cost  # torch and matplotlib: only when tracking

        epochs = pd.concat(logs.values(), ignore_index=True)
        # The report's cost table, one row per model the node trained.
        for cost in training_cost(self._dataset, logs).to_dict("records"):
            model = cost["model"]
            self._log_trained_model(model, epochs[epochs["model"] == model], cost, params, artifacts, node.name)

    def _log_trained_model(self, model: str, epochs: pd.DataFrame, cost: dict, params: dict, artifacts: dict,
                           node: str) -> None:
        import mlflow

        tags = {"model": model, "dataset": self._dataset, "kedro_node": node, "kedro_save_version": self._save_version}
        with mlflow.start_run(run_name=f"{self._dataset}/{model}", nested=True, tags=tags):
            mlflow.log_params(params)
            for step, row in enumerate(epochs.itertuples(index=False), start=1):
                values = {"loss": row.loss, "valid_metric": row.metric, "epoch_seconds": row.seconds}
                mlflow.log_metrics({k: float(v) for k, v in values.items() if _finite(v)}, step=step)
            summary = {"trainable_parameters": cost["trainable_parameters"], "train_minutes": cost["minutes"],
                       "peak_rss_mb": cost["peak_rss_mb"], "peak_cuda_mb": cost["peak_cuda_mb"]}
            mlflow.log_metrics({k: float(v) for k, v in summary.items() if _finite(v)})
            if isinstance(cost["stopped_by"], str):
                mlflow.set_tag("stopped_by", cost["stopped_by"])
            mlflow.set_tags({f"artifact.{name}": path for name, path in artifacts.items()})

    @hook_impl
    def after_pipeline_run(self, run_params, run_result, pipeline, catalog) -> None:
        if self._mlflow_hook is not None:
            self._mlflow_hook.after_pipeline_run(run_params=run_params, pipeline=pipeline, catalog=catalog)
            self._end_leftover_runs()

    @hook_impl
    def on_pipeline_error(self, error, run_params, pipeline, catalog) -> None:
        if self._mlflow_hook is not None:
            self._mlflow_hook.on_pipeline_error(error=error, run_params=run_params, pipeline=pipeline, catalog=catalog)
            self._end_leftover_runs()

    def _end_leftover_runs(self) -> None:
        """kedro-mlflow re-enters the run at every node (for threaded runners) and ends it once, which
        leaves it on MLflow's active-run stack: the next session in the same process (a notebook, the
        tests) would log into it. A run that was active before the session is the caller's to end."""
        import mlflow

        if getattr(self._mlflow_hook, "_already_active_mlflow", False):
            return
        while mlflow.active_run() is not None:
            mlflow.end_run()


def _flat(tree: dict, prefix: str = "") -> dict[str, str]:
    """Nested parameter sections as ``a.b.c`` keys, values as strings within MLflow's length limit; a
    character MLflow refuses in a key (an artifact config's ``best_valid_ndcg@10``) becomes ``_``."""
    flat = {}
    for key, value in tree.items():
        name = _MLFLOW_KEY_REFUSED.sub("_", f"{prefix}{key}")
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{name}."))
        else:
            flat[name] = str(value)[:6000]
    return flat


# MLflow keys: alphanumerics, underscores, dashes, periods, spaces, colons and slashes.
_MLFLOW_KEY_REFUSED = re.compile(r"[^A-Za-z0-9_\-. :/]")


def _finite(value: Any) -> bool:
    return value is not None and value is not pd.NA and math.isfinite(float(value))


def _artifact_path(catalog, name: str) -> str | None:
    """Where the run wrote dataset ``name``: a versioned dataset's folder of this run's version."""
    dataset = catalog.get(name)
    if dataset is None:
        return None
    if isinstance(dataset, AbstractVersionedDataset):
        return str(dataset._get_save_path())  # Kedro resolves the run's save version once per dataset
    path = dataset._describe().get("filepath")
    return None if path is None else str(path)
