"""Classifiers: each turns a request into a :class:`~tierwise.types.Classification`.

They share one protocol (:class:`Classifier`): an async ``classify`` so that a classifier that
calls a model (``llm``) and ones that do not (``learned``, the default, and ``rules``) plug into
the same pipeline.
"""

from tierwise.classifiers.base import Classifier
from tierwise.classifiers.cascade import CascadeClassifier
from tierwise.classifiers.learned import LearnedClassifier
from tierwise.classifiers.llm import LLMClassifier, parse_llm_reply
from tierwise.classifiers.rules import RulesClassifier

__all__ = [
    "CascadeClassifier",
    "Classifier",
    "LLMClassifier",
    "LearnedClassifier",
    "RulesClassifier",
    "parse_llm_reply",
]
