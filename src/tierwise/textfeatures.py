"""Text → the learned classifier's features. Pure Python over C-level string and regex
operations, bounded cost, shared by training and inference so both see exactly the same
features.

Two kinds of feature:

* **sparse keys**: the prompt's lower-cased words (``\\w+``, any script), the bigrams of its
  first :data:`BIGRAM_WORDS` words, its other non-space characters (punctuation, symbols), and
  the system prompt's words prefixed with ``s:``. The model keeps a vocabulary of the keys it
  learned weights for; everything else is ignored.
* **dense features**: a fixed list of numbers describing the request's shape (length, numbers,
  options of a multiple-choice question, code, maths symbols …) and the counts of the lesson's
  taxonomy cue words by level and of the system prompt's role words (:mod:`tierwise.taxonomy`),
  found with set look-ups.

Only the first :data:`SCAN_CHARS` characters of the prompt and :data:`SYSTEM_CHARS` of the
system prompt are read, so the cost is bounded whatever the request's size. No Python-level
loop runs over the words: tokenising, counting and building bigrams are ``re.findall``,
``str.count``, ``set``, ``map`` and ``zip`` calls.
"""

from __future__ import annotations

import itertools
import math
import re
from functools import lru_cache

from tierwise.taxonomy import CUE_WORDS_BY_LEVEL, EXPERT_ROLES, NARROW_ROLES, cue_categories

SCAN_CHARS = 4_000
BIGRAM_WORDS = 300
SYSTEM_CHARS = 1_000

_WORD = re.compile(r"\w+")
_OTHER = re.compile(r"[^\w\s]")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_OPTION = re.compile(r"^[A-J][.)] ", re.MULTILINE)
_SENTENCE_ENDS = (". ", ".\n", "? ", "?\n", "! ", "!\n")
_MATH = "=+*/^<>"
_CUES_1, _CUES_2, _CUES_3 = (CUE_WORDS_BY_LEVEL[lv] for lv in (1, 2, 3))
_log1p = math.log1p
_join = " ".join

DENSE_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_words",
    "log_lines",
    "log_numbers",
    "number_share",
    "log_sentences",
    "log_commas",
    "questions",
    "mc_options",
    "has_code",
    "math_symbols",
    "non_ascii",
    "mean_word_len",
    "log_system_chars",
    "cue_simple",
    "cue_standard",
    "cue_hard",
    "system_expert",
    "system_narrow",
)
MC_OPTIONS = DENSE_NAMES.index("mc_options")

__all__ = [
    "DENSE_NAMES",
    "MC_OPTIONS",
    "cue_categories",
    "featurize",
    "words_of",
]


def words_of(text: str) -> list[str]:
    """The lower-cased words of ``text`` as the features see them."""
    return _WORD.findall(text.lower())


@lru_cache(maxsize=512)
def _system_features(system: str) -> tuple[frozenset[str], int, int]:
    """The system prompt's keys and role-word counts. Cached: real traffic repeats a few long
    system prompts, and a cache hit costs one hash of the string instead of a tokenisation."""
    words = set(_WORD.findall(system[:SYSTEM_CHARS].lower()))
    return frozenset("s:" + w for w in words), len(words & EXPERT_ROLES), len(words & NARROW_ROLES)


def featurize(prompt: str, system: str = "") -> tuple[set[str], list[float]]:
    """The sparse keys and the dense feature vector (in :data:`DENSE_NAMES` order)."""
    text = prompt[:SCAN_CHARS]
    low = text.lower()
    words = _WORD.findall(low)
    keys = set(words)
    n_words = len(words)
    head = words[:BIGRAM_WORDS]
    keys.update(map(_join, itertools.pairwise(head)))
    keys.update(_OTHER.findall(text))
    cue1 = len(keys & _CUES_1)
    cue2 = len(keys & _CUES_2)
    cue3 = len(keys & _CUES_3)
    expert = narrow = 0
    if system:
        sys_keys, expert, narrow = _system_features(system)
        keys.update(sys_keys)
    numbers = len(_NUMBER.findall(text))
    n_chars = len(text)
    dense = [
        _log1p(len(prompt)),
        _log1p(n_words),
        _log1p(text.count("\n") + 1),
        _log1p(numbers),
        numbers / (n_words + 1),
        _log1p(sum(map(text.count, _SENTENCE_ENDS)) + 1),
        _log1p(text.count(",")),
        min(text.count("?"), 5) / 5,
        min(len(_OPTION.findall(text)), 10) / 4,
        1.0 if ("```" in text or "def " in text or "{\n" in text or ";\n" in text) else 0.0,
        _log1p(sum(map(text.count, _MATH))),
        min(1.0, (len(text.encode("utf-8", "replace")) - n_chars) / (n_chars + 1)),
        sum(map(len, words)) / n_words if n_words else 0.0,
        _log1p(len(system)),
        float(cue1),
        float(cue2),
        float(cue3),
        float(expert),
        float(narrow),
    ]
    return keys, dense
