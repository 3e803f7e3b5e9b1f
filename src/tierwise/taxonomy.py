"""The lesson's taxonomy, defined once: levels, categories, their cue words and phrases, the
system-prompt roles, and the conversation-shape limits.

Everything that classifies reads this module and nothing else for these facts:

* the learned model's features (:mod:`tierwise.textfeatures`) count each level's **cue words**
  and the system prompt's **role words**;
* the rules classifier (:mod:`tierwise.classifiers.rules`) scans each category's **phrases**
  (regular expressions) with its weight, and the same role words;
* the LLM classifier's prompt (:mod:`tierwise.classifiers.llm`) is built from the categories'
  **descriptions**, grouped by level;
* every classifier applies the same **shape floor** (:func:`shape_floor`): tools, attachments
  and long histories need at least level 2, an input above :data:`LARGE_CONTEXT_TOKENS` needs
  level 3 (the lesson's "multi-step reasoning across large contexts").

Changing a cue word changes the learned model's features: retrain (``tierwise train``) after
editing; the artifact records a hash of this definition (:func:`fingerprint`) and refuses to
load against a different one.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tierwise.types import ClassifyInput

LEVELS = (1, 2, 3)
LEVEL_NAMES = {1: "simple", 2: "standard", 3: "complex"}
# The lesson's tier names for the levels (used in the LLM classifier's prompt).
LEVEL_LABELS = {1: "Haiku", 2: "Sonnet", 3: "Opus"}
LEVEL_HEADINGS = {1: "Simple tasks", 2: "Standard tasks", 3: "Complex tasks"}

# -- conversation shape --------------------------------------------------------------------
LARGE_CONTEXT_TOKENS = 50_000
"""An input (whole conversation, system prompt and tools) above this many tokens needs level 3."""
LONG_PROMPT_TOKENS = 800
"""A single prompt above this many tokens counts as a long prompt (a level-2 signal in rules)."""
SHORT_PROMPT_TOKENS = 40
"""A prompt below this many tokens with only simple signals counts as short (rules)."""
LONG_CONVERSATION_TURNS = 12
"""A conversation with more turns than this needs at least level 2."""
SHAPE_CONFIDENCE = 0.8
"""The confidence a classification gets when the conversation's shape sets its level."""


@dataclass(frozen=True, slots=True)
class Category:
    """One category of the lesson's taxonomy.

    ``description`` is the line the LLM classifier's prompt shows (categories sharing a line
    are shown once); ``cues`` are single lower-case words looked up in a request's word set
    (the learned model's features); ``phrases`` are regular expressions the rules classifier
    scans for, worth ``weight`` to the category's level.
    """

    name: str
    level: int
    description: str
    cues: tuple[str, ...]
    phrases: tuple[str, ...]
    weight: float = 1.0


CATEGORIES: tuple[Category, ...] = (
    Category(
        "formatting",
        1,
        "Text formatting, extraction, classification",
        (
            "format",
            "formatting",
            "reformat",
            "capitalize",
            "uppercase",
            "lowercase",
            "bullet",
            "table",
        ),
        (
            r"\b(re)?format(ted|ting)?\b",
            r"\bconvert\b.{0,40}\b(json|csv|yaml|xml|table|markdown|list)\b",
            r"\bas (a )?(json|csv|yaml|xml|table|bullet)",
            r"\bcapitali[sz]e\b",
            r"\blowercase\b|\buppercase\b",
        ),
    ),
    Category(
        "extraction",
        1,
        "Text formatting, extraction, classification",
        ("extract", "extraction"),
        (
            r"\bextract\b",
            r"\bpull out\b",
            r"\bfind (all|the) (emails?|dates?|names?|numbers?|urls?)\b",
            r"\blist (all|the) (names|dates|emails|items)\b",
        ),
    ),
    Category(
        "classification",
        1,
        "Text formatting, extraction, classification",
        ("classify", "categorize", "categorise", "label", "sentiment", "spam", "tag"),
        (
            r"\bclassify\b",
            r"\bcategori[sz]e\b",
            r"\bsentiment\b",
            r"\blabel (this|each|these)\b",
            r"\bis this (email )?(spam|positive|negative)\b",
            r"\btag (this|each)\b",
        ),
    ),
    Category(
        "simple q&a",
        1,
        "Simple Q&A with clear answers",
        ("define", "definition", "synonym", "antonym", "capital", "acronym", "spell", "spelling"),
        (
            r"^\s*(what|who|when|where|which) (is|was|are|were) (the )?\w+( \w+){0,4}\s*\??\s*$",
            r"\bhow many\b.{0,40}\?$",
            r"\bdefine\b",
            r"\bwhat does \w+ stand for\b",
            r"\bcapital of\b",
        ),
        0.9,
    ),
    Category(
        "data transformation",
        1,
        "Data transformation, JSON parsing",
        ("json", "csv", "yaml", "xml", "convert", "parse", "sort", "alphabetize"),
        (
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
    Category(
        "translation",
        1,
        "Straightforward translation",
        ("translate", "translation", "french", "spanish", "german", "italian", "japanese"),
        (
            r"\btranslate\b",
            r"\bin (french|spanish|german|italian|japanese|chinese|portuguese)\b",
        ),
    ),
    Category(
        "code generation",
        2,
        "Code generation for standard patterns",
        ("implement", "function", "class", "script", "code", "refactor", "endpoint", "regex"),
        (
            r"\b(write|create|implement|build|generate|code)\b.{0,40}\b(function|class|method"
            r"|script|program|endpoint|query|component|module|api|test)s?\b",
            r"\b(python|javascript|typescript|java|go|rust|sql|c\+\+|bash|ruby)\b.{0,30}"
            r"\b(function|class|script|code|snippet)\b",
            r"\bunit tests?\b",
            r"\brefactor\b",
            r"\bregex\b",
        ),
        1.2,
    ),
    Category(
        "summarization",
        2,
        "Document summarization",
        ("summarize", "summarise", "summary", "tldr"),
        (r"\bsummari[sz]e\b", r"\bsummary\b", r"\btl;?dr\b", r"\bkey points\b"),
    ),
    Category(
        "bug fixing",
        2,
        "Bug fixing with clear error messages",
        ("fix", "bug", "error", "traceback", "exception", "debug", "crash"),
        (
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
    ),
    Category(
        "content creation",
        2,
        "Content creation with moderate creativity",
        ("blog", "post", "email", "article", "essay", "draft", "compose", "story", "poem"),
        (
            r"\b(write|draft|compose)\b.{0,40}\b(blog|post|email|letter|story|poem|article"
            r"|essay|tweet|description|speech|cover letter)\b",
            r"\bexplain\b",
            r"\bcompare\b",
            r"\bhow (do|does|can|should) (i|we|you)\b",
        ),
        0.9,
    ),
    Category(
        "architecture",
        3,
        "Architecture design and review",
        ("architecture", "architect", "architectural", "distributed", "scalability"),
        (
            r"\barchitect(ure|ural)?\b",
            r"\bsystem design\b",
            r"\bdesign (a|an|the) (\w+ ){0,3}(system|platform|service|pipeline|database"
            r"|protocol)\b",
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
    Category(
        "security",
        3,
        "Security audits and vulnerability analysis",
        (
            "security",
            "vulnerability",
            "vulnerabilities",
            "audit",
            "exploit",
            "injection",
            "xss",
            "csrf",
        ),
        (
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
    Category(
        "novel algorithm",
        3,
        "Novel algorithm design",
        ("novel", "prove", "proof", "theorem", "optimal"),
        (
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
    Category(
        "multi-step reasoning",
        3,
        "Multi-step reasoning across large contexts",
        ("tradeoffs", "tradeoff", "strategy", "implications", "consistency", "race"),
        (
            r"\bstep[- ]by[- ]step\b.{0,60}\b(analy|reason|derive)",
            r"\btrade-?offs?\b",
            r"\bacross (the |these |all )?(\w+ )?(documents|files|sources|services|codebase)\b",
            r"\broot cause\b",
            r"\bimplications\b",
            r"\bstrategy\b",
            r"\bevaluate\b.{0,40}\b(options|approaches|alternatives)\b",
        ),
    ),
    Category(
        "maximum accuracy",
        3,
        "Tasks requiring maximum accuracy",
        ("compliance", "critical", "rigorous"),
        (
            r"\bmaximum accuracy\b",
            r"\bcritical\b",
            r"\bmust be (exactly )?(correct|accurate)\b",
            r"\blegal\b.{0,20}\b(analysis|review|contract)\b",
            r"\bmedical\b",
            r"\bcompliance\b",
            r"\bproduction outage\b",
        ),
    ),
    Category(
        "research synthesis",
        3,
        "Research synthesis from multiple sources",
        ("synthesize", "synthesise", "research", "literature"),
        (
            r"\bresearch\b",
            r"\bliterature\b",
            r"\bsynthesi[sz]e\b",
            r"\bmultiple sources\b",
            r"\bstate of the art\b",
            r"\bmeta-analysis\b",
        ),
    ),
)

# -- the system prompt's role --------------------------------------------------------------
EXPERT_ROLE_WORDS: tuple[str, ...] = (
    "principal",
    "staff",
    "architect",
    "expert",
    "researcher",
    "auditor",
    "senior",
    "scientist",
    "professor",
)
"""Words of a system prompt that casts the model as an expert (a level-3 signal)."""
NARROW_ROLE_WORDS: tuple[str, ...] = (
    "formatter",
    "extractor",
    "classifier",
    "translator",
    "tagger",
    "parser",
    "converter",
    "only",
)
"""Words of a system prompt that confine the model to a narrow task (a level-1 signal)."""
EXPERT_ROLE_WEIGHT = 0.8
NARROW_ROLE_WEIGHT = 0.8


# -- derived views (computed once at import) -------------------------------------------------
CUES: dict[str, tuple[int, str]] = {}
"""cue word → (level, category); a word listed by two categories counts for the first."""
for _cat in CATEGORIES:
    for _word in _cat.cues:
        CUES.setdefault(_word, (_cat.level, _cat.name))
CUE_WORDS_BY_LEVEL: dict[int, frozenset[str]] = {
    level: frozenset(w for w, (lv, _) in CUES.items() if lv == level) for level in LEVELS
}
EXPERT_ROLES = frozenset(EXPERT_ROLE_WORDS)
NARROW_ROLES = frozenset(NARROW_ROLE_WORDS)


def category_names(level: int) -> list[str]:
    return [c.name for c in CATEGORIES if c.level == level]


def cue_categories(words: set[str] | frozenset[str]) -> list[tuple[int, str]]:
    """The categories whose cue words are among ``words``, as sorted (level, category)."""
    return sorted({CUES[w] for w in words & CUES.keys()})


def _compile(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE | re.MULTILINE)


PHRASE_PATTERNS: tuple[tuple[Category, re.Pattern[str]], ...] = tuple(
    (c, _compile(c.phrases)) for c in CATEGORIES
)
"""Each category with its phrases compiled into one pattern (the rules classifier scans them)."""
EXPERT_ROLE_PATTERN = re.compile(r"\b(?:" + "|".join(EXPERT_ROLE_WORDS) + r")\b", re.IGNORECASE)
NARROW_ROLE_PATTERN = re.compile(r"\b(?:" + "|".join(NARROW_ROLE_WORDS) + r")\b", re.IGNORECASE)


# -- the conversation's shape ----------------------------------------------------------------
def shape_floor(request: ClassifyInput) -> tuple[int, str]:
    """The lowest level a conversation's shape allows, and why (``(1, "")`` when none).

    The text of one turn cannot show how demanding a conversation is: an input above
    :data:`LARGE_CONTEXT_TOKENS` needs level 3 (reasoning across a large context); tools,
    attachments and more than :data:`LONG_CONVERSATION_TURNS` turns need at least level 2.
    Without a measured context (a library call), the prompt and system prompt's own size at
    about 4 characters per token stands for it.
    """
    floor, why = context_floor(request)
    if floor > 1:
        return floor, why
    reasons = []
    if request.tools:
        reasons.append(f"{request.tools} tool{'s' if request.tools > 1 else ''}")
    if request.attachments:
        reasons.append(f"{request.attachments} attachment{'s' if request.attachments > 1 else ''}")
    if request.turns > LONG_CONVERSATION_TURNS:
        reasons.append(f"{request.turns} turns")
    return (2, ", ".join(reasons)) if reasons else (1, "")


def context_floor(request: ClassifyInput) -> tuple[int, str]:
    """The part of :func:`shape_floor` that the input's size alone sets: level 3 above
    :data:`LARGE_CONTEXT_TOKENS`, else ``(1, "")``. A tool loop's context grows request by
    request, so the session router watches this line inside a turn (rule ``context-floor``)."""
    tokens = request.context_tokens
    if tokens is None:
        tokens = (len(request.prompt) + len(request.system)) // 4
    if tokens > LARGE_CONTEXT_TOKENS:
        return 3, f"~{tokens} input tokens"
    return 1, ""


def floor_for(level: int, request: ClassifyInput) -> tuple[int, str]:
    """The level the conversation's shape raises ``level`` (the text's) to, and why
    (``(level, "")`` when it does not). Inside a known agent's envelope the history is the
    agent's own work, not a harder task: the shape raises the text's level by one at most."""
    floor, why = shape_floor(request)
    if floor <= level:
        return level, ""
    if request.agent and floor > level + 1:
        return level + 1, f"{why} (an agent's history: one level up at most)"
    return floor, why


def floor_tier_index(level: int, n_tiers: int) -> int:
    """Index (cheapest first) of the lowest of ``n_tiers`` tiers that serves ``level``, the
    way the policy spreads the three levels over any number of tiers."""
    return round((min(max(level, 1), 3) - 1) * (n_tiers - 1) / 2)


# -- the LLM classifier's prompt ---------------------------------------------------------------
def llm_prompt() -> str:
    """The classifier prompt of the lesson, from the categories' descriptions."""
    lines = [
        "You are a task complexity classifier. Analyze the request and classify it into exactly "
        "one tier.",
    ]
    for level in LEVELS:
        lines.append("")
        lines.append(f"TIER {level} ({LEVEL_LABELS[level]}) - {LEVEL_HEADINGS[level]}:")
        shown: list[str] = []
        for c in CATEGORIES:
            if c.level == level and c.description not in shown:
                shown.append(c.description)
        lines.extend(f"- {d}" for d in shown)
    lines += [
        "",
        f"A conversation whose input exceeds about {LARGE_CONTEXT_TOKENS:,} tokens is TIER 3; "
        "one with tools, attachments or a long history is at least TIER 2.",
        "",
        'Respond with JSON only: {"tier": 1|2|3, "confidence": 0.0-1.0, '
        '"reasoning": "brief explanation"}',
    ]
    return "\n".join(lines)


def fingerprint() -> str:
    """A short hash of everything the learned model's features read from this module."""
    data = {
        "cues": {w: list(v) for w, v in sorted(CUES.items())},
        "expert": EXPERT_ROLE_WORDS,
        "narrow": NARROW_ROLE_WORDS,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf-8")).hexdigest()[:16]
