"""The spaCy pipeline trimmed to what Presidio reads, and a faster lemma context enhancer.

Presidio 2.2 reads three things from a spaCy `Doc`: the tokens and their
offsets, the lemma of each token, and the named entities. The dependency
parser produces none of them, yet takes about a fifth of the pipeline's time
with the sm model (measured on 1 KB texts, AMD EPYC), so `trim_pipeline`
disables it. The NER component of the
en_core_web models has its own tok2vec layer, and the lemmatizer reads the
tags of the tagger and attribute ruler, so neither depends on the parser.
`tests/test_detect_equivalence.py` checks on the labelled corpus that the
findings stay the same.

Presidio's `LemmaContextAwareEnhancer` finds the token of each result by
walking the `Doc` from its first token, building a Python `Token` object per
step, and tests each context word for membership in the list of the text's
keywords. Both costs grow with results x tokens: about half a second for a
10 KB text in the same measurement. `IndexedContextEnhancer` finds the same token by binary search
over the token end offsets and looks keywords up in a set, both built once
per text.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from typing import Any

from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
from presidio_analyzer.nlp_engine import NlpArtifacts
from spacy.attrs import IDX, LENGTH
from spacy.language import Language
from spacy.tokens import Doc

# Components whose output (dependency labels, heads, sentence starts) Presidio never reads.
UNUSED_COMPONENTS = ("parser", "senter")


def trim_pipeline(nlp: Language) -> list[str]:
    """Disable the components of `nlp` that Presidio does not read; return their names."""
    disabled = [name for name in UNUSED_COMPONENTS if name in nlp.pipe_names]
    for name in disabled:
        nlp.disable_pipe(name)
    return disabled


class IndexedContextEnhancer(LemmaContextAwareEnhancer):
    """Presidio's lemma context enhancer, locating result tokens by binary search.

    The token found is the one Presidio's linear scan finds: the first token
    whose end offset lies after the result's start. Token ends strictly
    increase, so that token is `bisect_right(ends, start)`.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # The token ends of the text being enhanced, per thread, dropped when
        # the call returns so no Doc outlives its analysis.
        self._local = threading.local()

    def enhance_using_context(
        self,
        text: str,
        raw_results: list[RecognizerResult],
        nlp_artifacts: NlpArtifacts,
        recognizers: list[EntityRecognizer],
        context: list[str] | None = None,
    ) -> list[RecognizerResult]:
        self._local.ends = self._local.keywords = None
        try:
            results: list[RecognizerResult] = super().enhance_using_context(
                text, raw_results, nlp_artifacts, recognizers, context
            )
        finally:
            self._local.ends = self._local.keywords = None
        return results

    def _find_index_of_match_token(  # type: ignore[override]
        self, word: str, start: int, tokens: Any, tokens_indices: list[int]
    ) -> int:
        ends: list[int] | None = getattr(self._local, "ends", None)
        if ends is None:
            ends = self._local.ends = token_ends(tokens, tokens_indices)
        index = bisect_right(ends, start)
        if index == len(ends):
            # The message Presidio's linear scan raises in the same case.
            raise ValueError(
                f"Did not find word '{word}' in the list of tokens although it is expected "
                "to be found"
            )
        return index

    def _add_n_words(  # type: ignore[override]
        self,
        index: int,
        n_words: int,
        lemmas: list[str],
        lemmatized_filtered_keywords: list[str],
        is_backward: bool,
    ) -> list[str]:
        # Presidio's loop, with the keyword list looked up as a set.
        keywords: frozenset[str] | None = getattr(self._local, "keywords", None)
        if keywords is None:
            keywords = self._local.keywords = frozenset(lemmatized_filtered_keywords)
        step = -1 if is_backward else 1
        context_words = []
        remaining = n_words + 1
        i = index
        while 0 <= i < len(lemmas) and remaining > 0:
            lower_lemma = lemmas[i].lower()
            if lower_lemma in keywords:
                context_words.append(lower_lemma)
                remaining -= 1
            i += step
        return context_words


def token_ends(tokens: Any, tokens_indices: list[int]) -> list[int]:
    """Return the end offset, in code points, of each token."""
    if isinstance(tokens, Doc):
        if len(tokens) == 0:
            return []
        offsets = tokens.to_array([IDX, LENGTH])
        ends: list[int] = (offsets[:, 0] + offsets[:, 1]).tolist()
        return ends
    return [start + len(token) for start, token in zip(tokens_indices, tokens, strict=True)]
