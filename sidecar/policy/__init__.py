"""Policies: the typed YAML contract that says what happens to each kind of PII."""

from sidecar.policy.load import PolicyError, load_policy
from sidecar.policy.model import Action, EntityRule, Mode, Policy
from sidecar.policy.store import POLICY_HEADER, PolicyStore

__all__ = [
    "POLICY_HEADER",
    "Action",
    "EntityRule",
    "Mode",
    "Policy",
    "PolicyError",
    "PolicyStore",
    "load_policy",
]
