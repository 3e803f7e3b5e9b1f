"""Request → features, computed once per request and shared by every classifier.

Cheap on purpose: a handful of precompiled regular expressions over at most the first
``_SCAN_CHARS`` characters of the prompt, plus lengths. No tokenizer, no model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SCAN_CHARS = 8_000


def _rx(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


# The lesson's taxonomy, as signals. Each tuple: (category, pattern, weight).
SIMPLE_SIGNALS: tuple[tuple[str, re.Pattern[str], float], ...] = (
    (
        "formatting",
        _rx(
            r"\b(re)?format(ted|ting)?\b",
            r"\bconvert\b.{0,40}\b(json|csv|yaml|xml|table|markdown|list)\b",
            r"\bas (a )?(json|csv|yaml|xml|table|bullet)",
            r"\bcapitali[sz]e\b",
            r"\blowercase\b|\buppercase\b",
        ),
        1.0,
    ),
    (
        "extraction",
        _rx(
            r"\bextract\b",
            r"\bpull out\b",
            r"\bfind (all|the) (emails?|dates?|names?|numbers?|urls?)\b",
            r"\blist (all|the) (names|dates|emails|items)\b",
        ),
        1.0,
    ),
    (
        "classification",
        _rx(
            r"\bclassify\b",
            r"\bcategori[sz]e\b",
            r"\bsentiment\b",
            r"\blabel (this|each|these)\b",
            r"\bis this (email )?(spam|positive|negative)\b",
            r"\btag (this|each)\b",
        ),
        1.0,
    ),
    (
        "simple_qa",
        _rx(
            r"^\s*(what|who|when|where|which) (is|was|are|were) (the )?\w+( \w+){0,4}\s*\??\s*$",
            r"\bhow many\b.{0,40}\?$",
            r"\bdefine\b",
            r"\bwhat does \w+ stand for\b",
            r"\bcapital of\b",
        ),
        0.9,
    ),
    (
        "data_transformation",
        _rx(
            r"\bjson\b",
            r"\bparse\b",
            r"\bcsv\b",
            r"\byaml\b",
            r"\bkey[- ]value\b",
            r"\bflatten\b",
            r"\bsort (these|this|the following)\b",
        ),
        0.7,
    ),
    (
        "translation",
        _rx(
            r"\btranslate\b", r"\bin (french|spanish|german|italian|japanese|chinese|portuguese)\b"
        ),
        1.0,
    ),
)

STANDARD_SIGNALS: tuple[tuple[str, re.Pattern[str], float], ...] = (
    (
        "code_generation",
        _rx(
            r"\b(write|create|implement|build|generate|code)\b.{0,40}\b(function|class|method|script|program|endpoint|query|component|module|api|test)s?\b",
            r"\b(python|javascript|typescript|java|go|rust|sql|c\+\+|bash|ruby)\b.{0,30}\b(function|class|script|code|snippet)\b",
            r"\bunit tests?\b",
            r"\brefactor\b",
            r"\bregex\b",
        ),
        1.2,
    ),
    (
        "summarization",
        _rx(r"\bsummari[sz]e\b", r"\bsummary\b", r"\btl;?dr\b", r"\bkey points\b"),
        1.0,
    ),
    (
        "bug_fixing",
        _rx(
            r"\bfix\b",
            r"\bbug\b",
            r"\berror\b",
            r"\btraceback\b",
            r"\bexception\b",
            r"\bstack trace\b",
            r"\bdoesn'?t work\b",
            r"\bnot working\b",
            r"\bdebug\b",
        ),
        1.0,
    ),
    (
        "content_creation",
        _rx(
            r"\b(write|draft|compose)\b.{0,40}\b(blog|post|email|letter|story|poem|article"
            r"|essay|tweet|description|speech|cover letter)\b",
            r"\bexplain\b",
            r"\bcompare\b",
            r"\bhow (do|does|can|should) (i|we|you)\b",
        ),
        0.9,
    ),
)

HARD_SIGNALS: tuple[tuple[str, re.Pattern[str], float], ...] = (
    (
        "architecture",
        _rx(
            r"\barchitect(ure|ural)?\b",
            r"\bsystem design\b",
            r"\bdesign (a|an|the) (\w+ ){0,3}"
            r"(system|platform|service|pipeline|database|protocol)\b",
            r"\bdistributed\b",
            r"\bscalab(le|ility)\b",
            r"\bmicroservices?\b",
            r"\brace conditions?\b",
            r"\bconsisten(cy|t) (model|guarantees|issues)\b",
            r"\bfault[- ]toleran",
            r"\bconsensus\b",
        ),
        1.3,
    ),
    (
        "security",
        _rx(
            r"\bsecurity\b",
            r"\bvulnerab",
            r"\baudit\b",
            r"\bthreat model",
            r"\bexploit",
            r"\bpenetration\b",
            r"\b(sql )?injection\b",
            r"\bxss\b",
            r"\bcsrf\b",
            r"\bcve-\d",
            r"\bcrypto(graph)?",
            r"\bauthenticat",
        ),
        1.3,
    ),
    (
        "novel_algorithm",
        _rx(
            r"\bnovel\b",
            r"\bnew algorithm\b",
            r"\bdesign an? (\w+ )?algorithm\b",
            r"\bprove\b",
            r"\bproof\b",
            r"\btheorem\b",
            r"\boptimal\b.{0,30}\b(algorithm|complexity|bound)\b",
            r"\bnp-hard\b",
        ),
        1.2,
    ),
    (
        "multi_step_reasoning",
        _rx(
            r"\bstep[- ]by[- ]step\b.{0,60}\b(analy|reason|derive)",
            r"\btrade-?offs?\b",
            r"\bacross (the |these |all )?(\w+ )?(documents|files|sources|services|codebase)\b",
            r"\broot cause\b",
            r"\bimplications\b",
            r"\bstrategy\b",
            r"\bevaluate\b.{0,40}\b(options|approaches|alternatives)\b",
        ),
        1.0,
    ),
    (
        "maximum_accuracy",
        _rx(
            r"\bmaximum accuracy\b",
            r"\bcritical\b",
            r"\bmust be (exactly )?(correct|accurate)\b",
            r"\blegal\b.{0,20}\b(analysis|review|contract)\b",
            r"\bmedical\b",
            r"\bcompliance\b",
            r"\bproduction outage\b",
        ),
        1.0,
    ),
    (
        "research_synthesis",
        _rx(
            r"\bresearch\b",
            r"\bliterature\b",
            r"\bsynthesi[sz]e\b",
            r"\bmultiple sources\b",
            r"\bstate of the art\b",
            r"\bmeta-analysis\b",
        ),
        1.0,
    ),
)

SYSTEM_HARD = _rx(
    r"\bprincipal\b",
    r"\bstaff engineer\b",
    r"\bsenior (security|architect)",
    r"\bsecurity (expert|auditor|researcher)\b",
    r"\barchitect\b",
    r"\bresearch(er)?\b",
    r"\bexpert\b",
)
SYSTEM_SIMPLE = _rx(
    r"\bformatter\b",
    r"\bextract(or|ion)\b",
    r"\bclassifier\b",
    r"\btranslator\b",
    r"\bonly (output|return|reply with) (json|the)\b",
)
CODE_BLOCK = re.compile(r"```|^(?: {4}|\t)\S", re.MULTILINE)
QUESTION = re.compile(r"\?")


@dataclass(frozen=True, slots=True)
class Features:
    """What classifiers look at, computed once."""

    prompt_chars: int
    system_chars: int
    approx_tokens: int
    lines: int
    has_code: bool
    questions: int
    simple: dict[str, float]
    standard: dict[str, float]
    hard: dict[str, float]
    system_hard: bool
    system_simple: bool


def _match(signals: tuple[tuple[str, re.Pattern[str], float], ...], text: str) -> dict[str, float]:
    return {name: weight for name, pattern, weight in signals if pattern.search(text)}


def extract(prompt: str, system: str = "") -> Features:
    """Compute the features of one request (prompt and optional system prompt)."""
    text = prompt[:_SCAN_CHARS]
    sys_text = system[:_SCAN_CHARS]
    return Features(
        prompt_chars=len(prompt),
        system_chars=len(system),
        approx_tokens=(len(prompt) + len(system)) // 4 + 1,
        lines=text.count("\n") + 1,
        has_code=bool(CODE_BLOCK.search(text)),
        questions=len(QUESTION.findall(text)),
        simple=_match(SIMPLE_SIGNALS, text),
        standard=_match(STANDARD_SIGNALS, text),
        hard=_match(HARD_SIGNALS, text),
        system_hard=bool(sys_text and SYSTEM_HARD.search(sys_text)),
        system_simple=bool(sys_text and SYSTEM_SIMPLE.search(sys_text)),
    )
