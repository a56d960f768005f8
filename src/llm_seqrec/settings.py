"""Kedro settings for llm_seqrec."""

from llm_seqrec.hooks import ParameterValidationHook, UpstreamCheckHook

HOOKS = (ParameterValidationHook(), UpstreamCheckHook())

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # An environment overrides single keys (sasrec.training.epochs), not whole sections.
    "merge_strategy": {"parameters": "soft", "globals": "soft"},
}
