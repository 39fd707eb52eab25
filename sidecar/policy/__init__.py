"""Policies: the typed YAML contract that says what happens to each kind of PII."""

from sidecar.policy.load import PolicyError, load_policy
from sidecar.policy.model import Action, EntityRule, Mode, Policy

__all__ = ["Action", "EntityRule", "Mode", "Policy", "PolicyError", "load_policy"]
