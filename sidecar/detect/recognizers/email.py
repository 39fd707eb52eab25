"""A tuned email recognizer that leaves the user information of URLs alone."""

from __future__ import annotations

import re

from presidio_analyzer import RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from sidecar.detect.offline import OfflineEmailRecognizer

# `scheme://user:` right before a match: the match is `password@host` of a URL.
_URL_USER_INFO = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*:$")


class TunedEmailRecognizer(OfflineEmailRecognizer):
    """Email addresses, except `password@host` inside `scheme://user:password@host`.

    There the secrets pack reports the password. An email finding over the same
    characters would outscore it and hide the password behind an email placeholder.
    """

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: NlpArtifacts | None = None,
        regex_flags: int | None = None,
    ) -> list[RecognizerResult]:
        results: list[RecognizerResult] = super().analyze(
            text, entities, nlp_artifacts, regex_flags
        )
        return [r for r in results if not _in_url_user_info(text, r.start)]


def _in_url_user_info(text: str, start: int) -> bool:
    return bool(_URL_USER_INFO.search(text[max(0, start - 200) : start]))
