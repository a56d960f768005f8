"""What every parameter section shares: unknown keys refused, values frozen."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter

Section = TypeVar("Section")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def validate_section(section: type[Section], data: dict) -> Section:
    """A node's parameter section whose type is a library dataclass (pydantic validates it as it
    validates a model: bounds checked, unknown keys refused)."""
    return TypeAdapter(section).validate_python(data)
