"""Kedro settings for llm_seqrec."""

from llm_seqrec.hooks import MlflowTrackingHook, ParameterValidationHook, UpstreamCheckHook

# pluggy calls a hook's implementations last registered first: ParameterValidationHook comes last so that
# it runs first and a bad parameter (dataset.k_core=0) is reported as such, before MlflowTrackingHook reads
# the dataset and tracking sections.
HOOKS = (UpstreamCheckHook(), MlflowTrackingHook(), ParameterValidationHook())
# MlflowTrackingHook drives kedro-mlflow's hook itself, so that the `tracking.mlflow` parameter can turn it off.
DISABLE_HOOKS_FOR_PLUGINS = ("kedro_mlflow", "kedro-mlflow")  # the wheel names it kedro_mlflow

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # An environment overrides single keys (sasrec.training.epochs), not whole sections.
    "merge_strategy": {"parameters": "soft", "globals": "soft"},
}
