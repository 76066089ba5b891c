"""The base of every config.yaml section: unknown keys refused, aliases accepted."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
