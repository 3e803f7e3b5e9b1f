"""Text → the learned classifier's features. Pure Python, bounded cost, shared by training and
inference so that both see exactly the same features.

Two kinds of feature:

* **sparse keys**: lower-cased word tokens of the prompt (and their bigrams), and the system
  prompt's tokens prefixed with ``s:``. The model keeps a vocabulary of the keys it learned
  weights for; everything else is ignored.
* **dense features**: a fixed list of numbers describing the request's shape (length, numbers,
  options of a multiple-choice question, code, …) and cues of the lesson's taxonomy found with
  set look-ups (no regular-expression scans, which cost milliseconds on long prompts).

Only the first :data:`SCAN_CHARS` characters of the prompt are tokenised and bigrams are taken
from the first :data:`BIGRAM_TOKENS` tokens, so the cost is bounded whatever the prompt's size.
"""

from __future__ import annotations

import itertools
import math
import re

SCAN_CHARS = 4_000
BIGRAM_TOKENS = 400
SYSTEM_CHARS = 1_000

_TOKEN = re.compile(r"[a-z0-9_]+|[^\sa-z0-9_]")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_OPTION = re.compile(r"^[A-J][.)] ", re.MULTILINE)

# The lesson's taxonomy as cue words, looked up in the token set: category → (level, words).
CUE_CATEGORIES: dict[str, tuple[int, str]] = {
    "formatting": (1, "format formatting reformat capitalize uppercase lowercase bullet table"),
    "extraction": (1, "extract extraction"),
    "classification": (1, "classify categorize categorise label sentiment spam tag"),
    "simple q&a": (1, "define definition synonym antonym capital acronym spell spelling"),
    "data transformation": (1, "json csv yaml xml convert parse sort alphabetize"),
    "translation": (1, "translate translation french spanish german italian japanese"),
    "code generation": (2, "implement function class script code refactor endpoint regex"),
    "summarization": (2, "summarize summarise summary tldr"),
    "bug fixing": (2, "fix bug error traceback exception debug crash"),
    "content creation": (2, "blog post email article essay draft compose story poem"),
    "architecture": (3, "architecture architect architectural distributed scalability"),
    "security": (3, "security vulnerability vulnerabilities audit exploit injection xss csrf"),
    "novel algorithm": (3, "novel prove proof theorem optimal"),
    "multi-step reasoning": (3, "tradeoffs tradeoff strategy implications consistency race"),
    "maximum accuracy": (3, "compliance critical rigorous"),
    "research synthesis": (3, "synthesize synthesise research literature"),
}
CUES: dict[str, tuple[int, str]] = {
    word: (level, category)
    for category, (level, words) in CUE_CATEGORIES.items()
    for word in words.split()
}
_CUES_BY_LEVEL: dict[int, frozenset[str]] = {
    level: frozenset(w for w, (lv, _) in CUES.items() if lv == level) for level in (1, 2, 3)
}
SYSTEM_HARD_CUES = frozenset(
    [
        "principal",
        "staff",
        "architect",
        "expert",
        "researcher",
        "auditor",
        "senior",
        "scientist",
        "professor",
    ]
)
SYSTEM_SIMPLE_CUES = frozenset(
    ["formatter", "extractor", "classifier", "translator", "tagger", "parser", "converter", "only"]
)

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
    "log_system_chars",
    "cue_simple",
    "cue_standard",
    "cue_hard",
    "system_hard",
    "system_simple",
)


def cue_categories(keys: set[str]) -> list[tuple[int, str]]:
    """The taxonomy categories whose cue words are among ``keys``, as (level, category)."""
    found = {CUES[k] for k in keys & CUES.keys()}
    return sorted(found)


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def featurize(prompt: str, system: str = "") -> tuple[set[str], list[float]]:
    """The sparse keys and the dense feature vector (in :data:`DENSE_NAMES` order)."""
    text = prompt[:SCAN_CHARS]
    toks = tokens(text)
    keys = set(toks)
    head = toks[:BIGRAM_TOKENS]
    keys.update([f"{a} {b}" for a, b in itertools.pairwise(head)])
    sys_keys: set[str] = set()
    if system:
        sys_keys = set(tokens(system[:SYSTEM_CHARS]))
        keys.update([f"s:{t}" for t in sys_keys])
    words = sum(1 for t in toks if t[0].isalnum())
    numbers = len(_NUMBER.findall(text))
    lines = text.count("\n") + 1
    sentences = text.count(". ") + text.count("? ") + text.count("! ") + text.count(".\n") + 1
    dense = [
        math.log1p(len(prompt)),
        math.log1p(words),
        math.log1p(lines),
        math.log1p(numbers),
        numbers / (words + 1),
        math.log1p(sentences),
        math.log1p(text.count(",")),
        min(text.count("?"), 5) / 5,
        min(len(_OPTION.findall(text)), 10) / 4,
        1.0 if "```" in text or "def " in text or "{\n" in text or ";\n" in text else 0.0,
        math.log1p(sum(text.count(c) for c in "=+*/^<>")),
        math.log1p(len(system)),
        float(len(keys & _CUES_BY_LEVEL[1])),
        float(len(keys & _CUES_BY_LEVEL[2])),
        float(len(keys & _CUES_BY_LEVEL[3])),
        float(len(sys_keys & SYSTEM_HARD_CUES)),
        float(len(sys_keys & SYSTEM_SIMPLE_CUES)),
    ]
    return keys, dense
