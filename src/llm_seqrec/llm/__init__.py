"""The frozen LLM backbone: loading, device and dtype choice, prompts, scoring and generation."""
