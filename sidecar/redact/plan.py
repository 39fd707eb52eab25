"""The redaction plan: policy decisions over findings, and the rewritten texts.

Per action, a detected value becomes:

- `placeholder`: `<TYPE_N>`, numbered per type in order of first appearance,
  recorded in the vault and restored in the response;
- `surrogate`: a realistic fake value of the same type, recorded in the vault
  and restored in the response;
- `redact` and `block`: the rule's `redact_text`, in which `{entity_type}` is
  replaced with the type; a blocked request is never forwarded;
- `mask`: the value with all but the kept characters replaced;
- `hash`: a truncated keyed HMAC-SHA256 of the value;
- `allow`: the value, unchanged.

One value gets one replacement per request, so a name that appears three
times becomes the same placeholder or surrogate three times.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from sidecar.detect.findings import Finding, merge_overlapping
from sidecar.policy.model import Action, EntityRule, Mode, Policy
from sidecar.policy.runtime import runtime_of
from sidecar.redact.operators import KeyedHasher, mask
from sidecar.redact.surrogates import SurrogateError, SurrogateFactory
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

Span = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Decision:
    """A merged finding and the action the policy takes on it."""

    finding: Finding
    action: Action


@dataclass
class Plan:
    """The outcome of applying a policy to the texts of one request.

    `spans` holds, per text and in the order of `decisions`, where each
    decision's replacement (or, for `allow` and in audit mode, the unchanged
    value) sits in the rewritten text, in code points.
    """

    texts: list[str]
    vault: Vault
    decisions: list[list[Decision]]
    entity_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    spans: list[list[Span]] = field(default_factory=list)

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
            decision.action is not Action.ALLOW
            for decisions in self.decisions
            for decision in decisions
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
    surrogate_seed: bytes | None = None,
) -> Plan:
    """Decide every finding and rewrite `texts` in order.

    Findings that the policy's `allow_list` shields are dropped first.
    `context_texts` are request texts outside the policy's scope: they are not
    rewritten, but placeholder-like tokens and surrogate candidates in them
    are avoided all the same. Placeholders are numbered by first appearance
    across `texts`. In audit mode nothing is rewritten and the vault stays
    empty, so nothing is restored either. `surrogate_seed` fixes the
    surrogates for tests; by default each plan draws a random seed.
    """
    runtime = runtime_of(policy)
    vault = Vault(reserved_keys([*texts, *context_texts]))
    unshielded = [
        runtime.allow_list.filter(text, text_findings)
        for text, text_findings in zip(texts, findings, strict=True)
    ]
    decisions = [decide(text_findings, policy) for text_findings in unshielded]
    plan = Plan(texts=list(texts), vault=vault, decisions=decisions)
    for text_decisions in decisions:
        for decision in text_decisions:
            counts = plan.entity_counts.setdefault(decision.finding.entity_type, {})
            counts[decision.action] = counts.get(decision.action, 0) + 1

    if policy.mode is Mode.ENFORCE:
        rewriter = _Rewriter(policy, vault, [*texts, *context_texts], surrogate_seed)
        rewritten = [rewriter.rewrite(text, d) for text, d in zip(texts, decisions, strict=True)]
        plan.texts = [text for text, _ in rewritten]
        plan.spans = [spans for _, spans in rewritten]
    else:
        plan.spans = [
            [(d.finding.start, d.finding.end) for d in text_decisions]
            for text_decisions in decisions
        ]
    return plan


class _Rewriter:
    """Rewrites the texts of one request, keeping one replacement per value."""

    def __init__(
        self, policy: Policy, vault: Vault, request_texts: Sequence[str], seed: bytes | None
    ) -> None:
        self._policy = policy
        self._vault = vault
        self._request_texts = request_texts
        # A fresh seed per request, so a value cannot be linked across requests by its surrogate.
        self._seed = seed if seed is not None else secrets.token_bytes(16)
        self._factory: SurrogateFactory | None = None
        self._hash_key = runtime_of(policy).hash_key
        self._replacements: dict[tuple[Action, str, str], str] = {}
        self._hashers: dict[str, KeyedHasher] = {}

    def rewrite(self, text: str, decisions: Sequence[Decision]) -> tuple[str, list[Span]]:
        pieces: list[str] = []
        spans: list[Span] = []
        position = 0
        length = 0
        for decision in decisions:
            finding = decision.finding
            before = text[position : finding.start]
            value = text[finding.start : finding.end]
            replacement = value
            if decision.action is not Action.ALLOW:
                replacement = self.replacement(decision.action, finding.entity_type, value)
            pieces += [before, replacement]
            length += len(before)
            spans.append((length, length + len(replacement)))
            length += len(replacement)
            position = finding.end
        pieces.append(text[position:])
        return "".join(pieces), spans

    def replacement(self, action: Action, entity_type: str, value: str) -> str:
        if action is Action.PLACEHOLDER:
            return self._vault.placeholder_for(entity_type, value)
        if action is Action.SURROGATE:
            return self._surrogate(entity_type, value)
        key = (action, entity_type, value)
        known = self._replacements.get(key)
        if known is None:
            known = self._new_replacement(
                action, self._policy.rule_for(entity_type), entity_type, value
            )
            self._replacements[key] = known
        return known

    def _new_replacement(
        self, action: Action, rule: EntityRule, entity_type: str, value: str
    ) -> str:
        if action in (Action.REDACT, Action.BLOCK):
            # A blocked request is never forwarded; redacting keeps the texts safe anyway.
            return (rule.redact_text or "").replace("{entity_type}", entity_type)
        if action is Action.MASK:
            assert rule.mask is not None
            return mask(value, rule.mask.options())
        if action is Action.HASH:
            return self._hasher(entity_type, rule).apply(entity_type, value)
        # `allow` keeps the value and `placeholder` goes through the vault.
        raise AssertionError(f"action {action.value!r} has no replacement value")

    def _surrogate(self, entity_type: str, value: str) -> str:
        if self._factory is None:
            self._factory = SurrogateFactory(
                self._seed,
                locale=self._policy.surrogate_locale,
                exclude_texts=self._request_texts,
            )
        try:
            surrogate = self._factory.surrogate_for(entity_type, value)
        except SurrogateError:
            # A value with almost no letters or digits has no usable surrogate.
            return self._vault.placeholder_for(entity_type, value)
        self._vault.add_surrogate(surrogate, value)
        return surrogate

    def _hasher(self, entity_type: str, rule: EntityRule) -> KeyedHasher:
        hasher = self._hashers.get(entity_type)
        if hasher is None:
            # `build_runtime` reads the key of every policy that hashes, or raises.
            assert self._hash_key is not None
            assert rule.hash is not None
            assert rule.hash.length is not None
            assert rule.hash.template is not None
            hasher = KeyedHasher(self._hash_key, rule.hash.length, rule.hash.template)
            self._hashers[entity_type] = hasher
        return hasher
