"""One taxonomy definition (tierwise.taxonomy) read by the features, the rules, the learned
model's cue words and the LLM prompt; one "large context" limit and one shape floor for every
classifier (issue 14: it was encoded three times, with three limits)."""

from __future__ import annotations

import asyncio

import pytest

from tierwise import taxonomy
from tierwise.classifiers import LearnedClassifier, LLMClassifier, RulesClassifier
from tierwise.classifiers.llm import CLASSIFIER_PROMPT, build_user_message
from tierwise.features import extract
from tierwise.taxonomy import LARGE_CONTEXT_TOKENS, shape_floor
from tierwise.textfeatures import DENSE_NAMES, featurize
from tierwise.types import Classification, ClassifyInput

from .stubs import ScriptedProvider

SIMPLE = "Translate 'good morning' into French."


def test_every_category_feeds_every_consumer() -> None:
    for category in taxonomy.CATEGORIES:
        assert category.level in taxonomy.LEVELS
        assert category.cues and category.phrases
        # the LLM prompt shows its description under its level
        block = CLASSIFIER_PROMPT.split(f"TIER {category.level} (")[1].split("TIER")[0]
        assert f"- {category.description}" in block
        # the learned features count its cue words at its level
        word = next(w for w in category.cues if taxonomy.CUES[w][1] == category.name)
        _, dense = featurize(f"please {word} this")
        counts = dict(zip(DENSE_NAMES, dense, strict=True))
        level_feature = ("cue_simple", "cue_standard", "cue_hard")[category.level - 1]
        assert counts[level_feature] >= 1, (category.name, word)
        # the rules find its phrases
        assert any(c is category for c, _ in taxonomy.PHRASE_PATTERNS)
    # the role words are read from the system prompt by both the learned and the rules features
    for word in taxonomy.EXPERT_ROLE_WORDS:
        _, dense = featurize("hello", f"You are the {word}.")
        assert dict(zip(DENSE_NAMES, dense, strict=True))["system_expert"] == 1.0
        assert extract("hello", f"You are the {word}.").system_expert


def test_the_fingerprint_follows_the_cue_words(monkeypatch: pytest.MonkeyPatch) -> None:
    before = taxonomy.fingerprint()
    monkeypatch.setitem(taxonomy.CUES, "zebra", (3, "security"))
    assert taxonomy.fingerprint() != before


def test_one_large_context_limit() -> None:
    assert shape_floor(ClassifyInput(SIMPLE, context_tokens=LARGE_CONTEXT_TOKENS))[0] == 1
    level, why = shape_floor(ClassifyInput(SIMPLE, context_tokens=LARGE_CONTEXT_TOKENS + 1))
    assert level == 3 and "input tokens" in why
    # without a measured context (a library call) the prompt's own size stands for it
    huge = "word " * (LARGE_CONTEXT_TOKENS + 10)
    assert shape_floor(ClassifyInput(huge))[0] == 3
    assert shape_floor(ClassifyInput(SIMPLE, tools=1))[0] == 2
    assert shape_floor(ClassifyInput(SIMPLE, turns=taxonomy.LONG_CONVERSATION_TURNS + 1))[0] == 2
    assert f"{LARGE_CONTEXT_TOKENS:,}" in CLASSIFIER_PROMPT


def _classify(classifier: object, request: ClassifyInput) -> Classification:
    result: Classification = asyncio.run(classifier.classify(request))  # type: ignore[attr-defined]
    return result


@pytest.mark.parametrize("kind", ["learned", "rules", "llm"])
def test_every_classifier_applies_the_same_floor(kind: str) -> None:
    def make() -> object:
        if kind == "learned":
            return LearnedClassifier()
        if kind == "rules":
            return RulesClassifier()
        return LLMClassifier(ScriptedProvider('{"tier": 1, "confidence": 0.9}'))

    plain = _classify(make(), ClassifyInput(SIMPLE))
    assert plain.level == 1
    below = _classify(make(), ClassifyInput(SIMPLE, context_tokens=LARGE_CONTEXT_TOKENS - 1))
    assert below.level == 1  # rules used to say 3 from 20,000 tokens, learned from 50,000
    big = _classify(make(), ClassifyInput(SIMPLE, context_tokens=LARGE_CONTEXT_TOKENS + 1))
    assert big.level == 3 and big.confidence >= taxonomy.SHAPE_CONFIDENCE
    tools = _classify(make(), ClassifyInput(SIMPLE, tools=2))
    assert tools.level == 2


def test_llm_sees_the_conversation_shape() -> None:
    message = build_user_message(ClassifyInput(SIMPLE, turns=4, tools=2, context_tokens=1234))
    assert message.endswith("Conversation: 4 turns, 2 tools, ~1,234 input tokens")
    assert "Conversation" not in build_user_message(ClassifyInput(SIMPLE))
