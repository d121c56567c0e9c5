"""Weighted phrase lists for alerts (000 §8.2, 001 §2.12: filtering is never complete,
so queries and pages are scored and a high score raises a `web.alert`).

A list file (``filters/data/phrases/*.txt``) has one phrase a line, E2Guardian-style
weights, with negative weights for context that makes a match harmless::

    # weight  phrase            (a trailing * matches any word ending)
    40        суицид*
    -30       профилактика суицид*

Scoring: the text and the phrases are folded the same way (lower case; Kyrgyz ң ө ү
to н о у; ё to е; Latin letters that look Cyrillic and Cyrillic that look Latin to
one shape, so ``cуицид`` with a Latin ``c`` still matches; punctuation to spaces),
then every occurrence of every phrase adds its weight.  `Score.total` is compared
with the policy's `alert_threshold`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data" / "phrases"

# One shape for letters that look alike across Cyrillic and Latin (after lower-casing),
# and Kyrgyz letters written without a Kyrgyz keyboard.
_FOLD = str.maketrans({
    "ё": "е", "ң": "н", "ө": "о", "ү": "у", "һ": "х", "і": "и", "ї": "и", "й": "и",
    "a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "x": "х", "y": "у", "k": "к",
    "m": "м", "t": "т", "h": "н", "b": "в", "i": "и", "u": "и", "n": "п",
    "ı": "и", "ç": "с", "ğ": "г", "ş": "ш", "ö": "о", "ü": "у",
})
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def fold(text: str) -> str:
    """Case- and look-alike-folded text (see the module docstring)."""
    return text.casefold().translate(_FOLD)


def words(text: str) -> list[str]:
    return _WORD.findall(fold(text))


@dataclass(frozen=True)
class Phrase:
    text: str  # as written in the list
    weight: int
    tokens: tuple[str, ...]  # folded words; the last may be a prefix (stem)
    stem: bool  # the last token is a prefix
    list_name: str = ""


@dataclass
class Score:
    total: int = 0
    matches: dict[str, int] = field(default_factory=dict)  # phrase text → times matched
    lists: set[str] = field(default_factory=set)

    def over(self, threshold: int) -> bool:
        return self.total >= threshold

    @property
    def phrases(self) -> list[str]:
        return sorted(self.matches)


class PhraseProblem(ValueError):
    pass


def parse_list(text: str, *, name: str = "", source: str = "<text>") -> list[Phrase]:
    """Phrases of one list; a bad line raises PhraseProblem naming file and line."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        weight_text, _, phrase = line.partition(" ")
        phrase = phrase.strip()
        try:
            weight = int(weight_text)
        except ValueError:
            raise PhraseProblem(f"{source}:{number}: a line starts with its weight, e.g. '40 суицид*' "
                                f"(got {line!r})") from None
        stem = phrase.endswith("*")
        tokens = tuple(words(phrase.rstrip("*")))
        if not tokens:
            raise PhraseProblem(f"{source}:{number}: no words after the weight")
        out.append(Phrase(phrase, weight, tokens, stem, name))
    return out


class PhraseMatcher:
    """Many phrase lists, indexed by their first word for one pass over the text."""

    def __init__(self, phrases: list[Phrase]):
        self.phrases = phrases
        self._exact: dict[str, list[Phrase]] = {}
        self._stems: dict[str, list[Phrase]] = {}
        for p in phrases:
            if len(p.tokens) == 1 and p.stem:
                self._stems.setdefault(p.tokens[0], []).append(p)
            else:
                self._exact.setdefault(p.tokens[0], []).append(p)
        self._stem_lengths = sorted({len(k) for k in self._stems})

    @classmethod
    def load(cls, names: list[str] | None = None, directory: Path | None = None) -> PhraseMatcher:
        """The shipped lists (or the named ones, or every ``*.txt`` in `directory`)."""
        directory = directory or DATA_DIR
        files = sorted(directory.glob("*.txt"))
        if names is not None:
            files = [f for f in files if f.stem in names]
        phrases: list[Phrase] = []
        for f in files:
            phrases.extend(parse_list(f.read_text("utf-8"), name=f.stem, source=str(f)))
        return cls(phrases)

    def _token_matches(self, phrase: Phrase, ws: list[str], i: int) -> bool:
        n = len(phrase.tokens)
        if i + n > len(ws):
            return False
        for k in range(n - 1):
            if ws[i + k] != phrase.tokens[k]:
                return False
        last = ws[i + n - 1]
        return last.startswith(phrase.tokens[-1]) if phrase.stem else last == phrase.tokens[-1]

    def score(self, text: str) -> Score:
        ws = words(text)
        result = Score()
        for i, w in enumerate(ws):
            candidates = list(self._exact.get(w[:0] + w, ()))
            for length in self._stem_lengths:
                if length > len(w):
                    break
                candidates.extend(self._stems.get(w[:length], ()))
            # multi-word phrases whose first token is a stem of w
            for p in candidates:
                if self._token_matches(p, ws, i):
                    result.total += p.weight
                    result.matches[p.text] = result.matches.get(p.text, 0) + 1
                    result.lists.add(p.list_name)
        return result


@lru_cache(maxsize=1)
def default_matcher() -> PhraseMatcher:
    """The shipped starter lists, loaded once."""
    return PhraseMatcher.load()


def score(text: str) -> Score:
    """Score `text` with the shipped starter lists."""
    return default_matcher().score(text)
