"""The redaction plan: policy decisions over findings, and the rewritten texts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sidecar.detect.findings import Finding, merge_overlapping
from sidecar.policy.model import Action, Mode, Policy
from sidecar.redact.vault import Vault, reserved_keys

# When overlapping findings disagree, the strictest action decides the group.
_SEVERITY = {
    Action.ALLOW: 0,
    Action.PLACEHOLDER: 1,
    Action.SURROGATE: 2,
    Action.HASH: 3,
    Action.MASK: 4,
    Action.REDACT: 5,
    Action.BLOCK: 6,
}


@dataclass(frozen=True, slots=True)
class Decision:
    """A merged finding and the action the policy takes on it."""

    finding: Finding
    action: Action


@dataclass
class Plan:
    """The outcome of applying a policy to the texts of one request."""

    texts: list[str]
    vault: Vault
    decisions: list[list[Decision]]
    entity_counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def blocked_counts(self) -> dict[str, int]:
        """Entity types whose action is `block`, with their counts."""
        return {
            entity_type: actions[Action.BLOCK]
            for entity_type, actions in self.entity_counts.items()
            if actions.get(Action.BLOCK)
        }

    @property
    def changed(self) -> bool:
        return any(
            decision.action is not Action.ALLOW for decisions in self.decisions for decision in decisions
        )


def decide(findings: Sequence[Finding], policy: Policy) -> list[Decision]:
    """Apply thresholds and actions to one text's findings and merge overlaps.

    Findings whose action is `allow` are reported but never merged with the
    others, so a date inside a phone number cannot shield the phone number.
    """
    acted: list[Finding] = []
    allowed: list[Finding] = []
    for finding in findings:
        rule = policy.rule_for(finding.entity_type)
        if finding.score < (rule.min_score or 0.0):
            continue
        (allowed if rule.action is Action.ALLOW else acted).append(finding)

    def rank(finding: Finding) -> tuple[int, float, int]:
        action = policy.rule_for(finding.entity_type).action
        return (_SEVERITY[action], finding.score, finding.end - finding.start)

    merged = merge_overlapping(acted, rank=rank)
    decisions = [Decision(f, policy.rule_for(f.entity_type).action) for f in merged]
    for finding in merge_overlapping(allowed):
        if not any(finding.overlaps(decision.finding) for decision in decisions):
            decisions.append(Decision(finding, Action.ALLOW))
    decisions.sort(key=lambda decision: decision.finding.start)
    return decisions


def build_plan(
    policy: Policy,
    texts: Sequence[str],
    findings: Sequence[Sequence[Finding]],
    context_texts: Sequence[str] = (),
) -> Plan:
    """Decide every finding and rewrite `texts` in order.

    `context_texts` are request texts outside the policy's scope: they are not
    rewritten, but placeholder-like tokens in them are reserved all the same.
    Placeholders are numbered by first appearance across `texts`.
    """
    vault = Vault(reserved_keys([*texts, *context_texts]))
    decisions = [decide(text_findings, policy) for text_findings in findings]
    plan = Plan(texts=list(texts), vault=vault, decisions=decisions)
    for text_decisions in decisions:
        for decision in text_decisions:
            counts = plan.entity_counts.setdefault(decision.finding.entity_type, {})
            counts[decision.action] = counts.get(decision.action, 0) + 1

    if policy.mode is Mode.ENFORCE:
        plan.texts = [
            _rewrite(text, text_decisions, policy, vault)
            for text, text_decisions in zip(texts, decisions, strict=True)
        ]
    return plan


def _rewrite(text: str, decisions: Sequence[Decision], policy: Policy, vault: Vault) -> str:
    pieces: list[str] = []
    position = 0
    for decision in decisions:
        if decision.action is Action.ALLOW:
            continue
        finding = decision.finding
        pieces.append(text[position : finding.start])
        value = text[finding.start : finding.end]
        pieces.append(_replacement(decision.action, finding.entity_type, value, policy, vault))
        position = finding.end
    pieces.append(text[position:])
    return "".join(pieces)


def _replacement(action: Action, entity_type: str, value: str, policy: Policy, vault: Vault) -> str:
    if action is Action.PLACEHOLDER:
        return vault.placeholder_for(entity_type, value)
    if action in (Action.REDACT, Action.BLOCK):
        # A blocked request is never forwarded; redacting keeps the texts safe anyway.
        return policy.redact_text
    raise NotImplementedError(f"action {action.value!r} is not supported yet")
