"""Raw-data readers, validation, splitting and negative sampling (no Kedro here)."""
