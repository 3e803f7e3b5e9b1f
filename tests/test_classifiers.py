"""Rules, LLM and cascade classifiers behind the one protocol."""

from __future__ import annotations

import asyncio

import pytest

from tierwise.classifiers import CascadeClassifier, Classifier, LLMClassifier, RulesClassifier
from tierwise.errors import ProviderError
from tierwise.types import Classification, ClassifyInput, Usage

from .stubs import ScriptedProvider


def classify(classifier: Classifier, prompt: str, system: str = "") -> Classification:
    return asyncio.run(classifier.classify(ClassifyInput(prompt, system)))


@pytest.mark.parametrize(
    ("prompt", "system", "level"),
    [
        ("Convert this to JSON: name=Ann, age=31", "", 1),
        ("Extract all email addresses from the text below.", "", 1),
        ("Classify the sentiment of this review: 'Loved it!'", "", 1),
        ("Translate 'good morning' into French.", "", 1),
        ("Write a Python function that merges two sorted lists.", "", 2),
        ("Summarize this document in five bullet points: ...", "", 2),
        ("Fix this bug: TypeError: 'NoneType' object is not subscriptable in line 12", "", 2),
        ("Write a blog post about remote work for our company newsletter.", "", 2),
        ("Design a distributed, fault-tolerant architecture for a payments platform.", "", 3),
        ("Perform a security audit of this OAuth flow and list vulnerabilities.", "", 3),
        ("Review this design for race conditions.", "You are a principal architect.", 3),
    ],
)
def test_rules_follow_the_lessons_taxonomy(prompt: str, system: str, level: int) -> None:
    result = classify(RulesClassifier(), prompt, system)
    assert result.level == level, result.reasoning
    assert result.confidence >= 0.7, result.reasoning
    assert result.classifier == "rules"
    assert result.usage is None  # no model call, no cost


def test_rules_admit_when_nothing_matched() -> None:
    result = classify(RulesClassifier(), "hmm")
    assert result.confidence < 0.7
    assert "no taxonomy signal" in result.reasoning


def test_rules_are_unsure_when_signals_conflict() -> None:
    # Formatting (simple) and security audit (hard) in one request: not confident.
    result = classify(RulesClassifier(), "Format as JSON the security audit findings.")
    assert result.confidence < 0.7


def test_llm_classifier_uses_reply_and_reports_its_usage() -> None:
    provider = ScriptedProvider(
        '```json\n{"tier": 3, "confidence": 0.92, "reasoning": "audit"}\n```'
    )
    result = classify(LLMClassifier(provider), "Audit this code", "You are terse.")
    assert (result.level, result.confidence, result.reasoning) == (3, 0.92, "audit")
    assert result.usage == Usage(input_tokens=300, output_tokens=30)
    assert result.model == "claude-haiku-4-5"
    call = provider.calls[0]
    assert call.model == "claude-haiku-4-5"
    assert call.system is not None and "TIER 3 (Opus)" in call.system
    assert call.thinking is None
    assert call.messages[0]["content"].startswith("System prompt: You are terse.")


@pytest.mark.parametrize(
    ("reply", "level", "reason"),
    [
        ("no idea", 2, "no JSON object"),
        ('{"tier": 7, "confidence": 0.9}', 2, "not 1, 2 or 3"),
        ('{"tier": 1}', 1, "confidence missing"),
        ('{"tier": 3, "confidence": 3}', 3, "outside [0, 1]"),
    ],
)
def test_llm_classifier_falls_back_with_zero_confidence(
    reply: str, level: int, reason: str
) -> None:
    result = classify(LLMClassifier(ScriptedProvider(reply)), "anything")
    assert result.level == level
    assert result.confidence == 0.0
    assert result.fallback_reason is not None and reason in result.fallback_reason
    assert result.usage is not None  # the failed call still cost tokens


def test_llm_classifier_times_out() -> None:
    provider = ScriptedProvider('{"tier": 1, "confidence": 1}', delay_s=5)
    result = classify(LLMClassifier(provider, timeout_s=0.05), "anything")
    assert result.fallback_reason == "classifier call timed out after 0.05s"
    assert result.confidence == 0.0
    assert result.latency_ms < 2_000


def test_llm_classifier_survives_provider_errors() -> None:
    error = ProviderError("upstream returned 529 overloaded_error", retryable=True, status=529)
    result = classify(LLMClassifier(ScriptedProvider(error=error)), "anything")
    assert result.fallback_reason is not None and "529" in result.fallback_reason
    assert result.usage is None


def test_cascade_skips_llm_when_rules_are_sure() -> None:
    provider = ScriptedProvider('{"tier": 3, "confidence": 1}')
    cascade = CascadeClassifier(RulesClassifier(), LLMClassifier(provider), consult_below=0.6)
    result = classify(cascade, "Translate 'thank you' into Spanish.")
    assert result.level == 1
    assert result.classifier == "cascade:rules"
    assert provider.calls == []


def test_cascade_consults_llm_when_rules_are_unsure() -> None:
    provider = ScriptedProvider('{"tier": 3, "confidence": 0.8, "reasoning": "deep"}')
    cascade = CascadeClassifier(RulesClassifier(), LLMClassifier(provider), consult_below=0.6)
    result = classify(cascade, "hmm")
    assert (result.level, result.classifier, result.reasoning) == (3, "cascade:llm", "deep")
    assert len(provider.calls) == 1


def test_cascade_keeps_rules_verdict_when_llm_fails_but_charges_its_tokens() -> None:
    provider = ScriptedProvider("garbage")
    cascade = CascadeClassifier(RulesClassifier(), LLMClassifier(provider), consult_below=0.6)
    result = classify(cascade, "hmm")
    assert result.classifier == "cascade:rules"
    assert result.fallback_reason is not None
    assert result.usage == provider.usage
