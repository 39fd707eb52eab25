"""Frozen pydantic models of a version 1 policy file."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Action(StrEnum):
    """What the sidecar does with a detected value."""

    PLACEHOLDER = "placeholder"
    REDACT = "redact"
    MASK = "mask"
    HASH = "hash"
    SURROGATE = "surrogate"
    BLOCK = "block"
    ALLOW = "allow"

    @property
    def reversible(self) -> bool:
        return self in (Action.PLACEHOLDER, Action.SURROGATE)


class Mode(StrEnum):
    """`enforce` rewrites requests; `audit` only detects and records."""

    ENFORCE = "enforce"
    AUDIT = "audit"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EntityRule(_Frozen):
    """The action and score threshold for one entity type."""

    action: Action
    min_score: float | None = Field(default=None, ge=0.0, le=1.0)


class Scope(_Frozen):
    """The parts of a request that are scanned; every part by default."""

    system: bool = True
    user: bool = True
    assistant: bool = True
    tool_results: bool = True
    tool_arguments: bool = True


class Policy(_Frozen):
    """A parsed, validated policy; `content_hash` identifies the exact file content."""

    version: Literal[1]
    name: str = Field(min_length=1)
    description: str = ""
    mode: Mode = Mode.ENFORCE
    languages: tuple[str, ...] = ("en",)
    min_score: float = Field(default=0.5, ge=0.0, le=1.0)
    default_action: Action = Action.PLACEHOLDER
    redact_text: str = "[REDACTED]"
    entities: dict[str, EntityRule] = Field(default_factory=dict)
    scope: Scope = Scope()
    content_hash: str = ""

    def rule_for(self, entity_type: str) -> EntityRule:
        """Return the rule for `entity_type`, falling back to the policy defaults."""
        rule = self.entities.get(entity_type)
        if rule is None:
            return EntityRule(action=self.default_action, min_score=self.min_score)
        if rule.min_score is None:
            return EntityRule(action=rule.action, min_score=self.min_score)
        return rule
