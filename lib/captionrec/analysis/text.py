"""Caption text statistics: length, distinct-1/2, exact duplicates, and content words (for grounding).

Tokens: lower-case runs of letters, digits and apostrophes (`re` word characters without '_').
distinct-n (Li et al., 2016): the number of distinct n-grams over all captions of a group divided by the
number of n-grams, so a captioner that writes the same phrases for every item scores low. Content words:
tokens of >= 3 characters that are not stop words, digits or `ignore` words, with a plural 's' dropped
("cats" -> "cat", but "glass", "bus", "virus" stay).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*")

STOP_WORDS: frozenset[str] = frozenset(
    """
a about above after again against all also am an and any are aren't as at be because been before being below
between both but by can can't could couldn't did didn't do does doesn't doing don't down during each few for
from further had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers herself him
himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself just let's like me more most
mustn't my myself no nor not now of off on once only or other ought our ours ourselves out over own same shan't
she she'd she'll she's should shouldn't so some such than that that's the their theirs them themselves then
there there's these they they'd they'll they're they've this those through to too under until up very was
wasn't we we'd we'll we're we've were weren't what what's when when's where where's which while who who's whom
why why's will with won't would wouldn't you you'd you'll you're you've your yours yourself yourselves
one two three get got gets let lets really just yeah okay oh hey wow many much every thing things something
""".split()
)


def tokens(text: object) -> list[str]:
    """Lower-case word tokens of a text ([] for None / NaN / non-text)."""
    if not isinstance(text, str):
        return []
    return _TOKEN.findall(text.lower())


def _singular(word: str) -> str:
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def content_words(text: object, ignore: Iterable[str] = ()) -> set[str]:
    """The set of content words of a text (see the module docstring)."""
    ignored = {_singular(w) for w in ignore} | set(ignore)
    out = set()
    for t in tokens(text):
        t = t.replace("'s", "") if t.endswith("'s") else t
        if len(t) < 3 or t in STOP_WORDS or t.isdigit():
            continue
        w = _singular(t)
        if w not in ignored and t not in ignored:
            out.add(w)
    return out


def ngrams(toks: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]


def distinct_n(texts: Iterable[object], n: int) -> float:
    """Distinct n-grams / all n-grams over the texts (NaN when they hold no n-gram)."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        grams = ngrams(tokens(text), n)
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else math.nan


def duplicate_share(texts: Sequence[object]) -> float:
    """Share of texts whose normalised text (lower case, single spaces) another text of the list repeats."""
    norm = pd.Series([" ".join(tokens(t)) for t in texts], dtype=object)
    if not len(norm):
        return math.nan
    return float(norm.duplicated(keep=False).mean())


def text_stats(texts: Sequence[object]) -> dict[str, float]:
    """Length (words, characters), distinct-1/2 and the exact-duplicate share of a group of captions."""
    words = np.array([len(tokens(t)) for t in texts], dtype=np.float64)
    chars = np.array([len(t) if isinstance(t, str) else 0 for t in texts], dtype=np.float64)
    nan = math.nan
    return {
        "words_mean": float(words.mean()) if words.size else nan,
        "words_median": float(np.median(words)) if words.size else nan,
        "chars_mean": float(chars.mean()) if chars.size else nan,
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "exact_duplicates": duplicate_share(texts),
    }
