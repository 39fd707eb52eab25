"""The policy in force, swapped atomically when it is reloaded."""

from __future__ import annotations

from pathlib import Path

from sidecar.policy.load import load_policy
from sidecar.policy.model import Policy


class PolicyStore:
    """Holds the current policy; a request takes one reference and keeps it to the end."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._current: Policy | None = None

    def load(self) -> Policy:
        """Load the policy file; raise `PolicyError` and keep the old policy if it is invalid."""
        policy = load_policy(self.path)
        self._current = policy
        return policy

    @property
    def loaded(self) -> bool:
        return self._current is not None

    @property
    def current(self) -> Policy:
        if self._current is None:
            raise RuntimeError("no policy is loaded")
        return self._current
