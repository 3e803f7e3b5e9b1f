"""The learned, local default classifier: one small linear model shipped in the package.

The artifact (``tierwise/models/router-v1.json``) holds a vocabulary of text keys, their
weights for every output of the model, weights for a few dense features of the request's
shape, and the model card (data hashes, metrics). ``tierwise train`` rebuilds it.

Outputs ("heads") of the one model, all linear in the same features:

* ``tier``: P(the request needs tier level 1, 2, 3) in the lesson's taxonomy (softmax), learned
  from tierwise's tier-labelled corpus. It gives the classification's level, confidence, the
  need score and the per-tier predicted quality the policy uses.
* ``rl:weak`` / ``rl:strong``: P(a weak / strong reference model answers correctly), learned
  from the RouteLLM and RouterBench data (Mixtral-8x7B vs GPT-4-1106). Their difference, the
  expected gain of the strong model, is the score evaluated with the RouteLLM paper's metric.
* ``rb:<model>``: P(correct) for each RouterBench model, for cost–quality routing over many
  models.

Decision cost: tokenising at most a few thousand characters, a set of dictionary look-ups and
one small numpy sum — tens of microseconds for a typical prompt. numpy is imported when the
model is loaded (router construction), never by ``import tierwise``.
"""

from __future__ import annotations

import base64
import json
import math
import time
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tierwise.errors import ConfigError
from tierwise.textfeatures import DENSE_NAMES, cue_categories, featurize
from tierwise.types import Classification, ClassifyInput

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

ARTIFACT_FORMAT = "tierwise-router"
ARTIFACT_VERSION = 1
DEFAULT_ARTIFACT = "router-v1.json"
LEVELS = (1, 2, 3)
ABSTAIN_CONFIDENCE = 0.4
_LEVEL_NAMES = {1: "simple", 2: "standard", 3: "complex"}
_NAME = "learned"


def encode_array(array: npt.NDArray[Any]) -> dict[str, Any]:
    """A numpy array as JSON: dtype, shape and base64 of its little-endian bytes."""
    import numpy as np

    arr = np.ascontiguousarray(array)
    little = arr.astype(arr.dtype.newbyteorder("<"))
    return {
        "dtype": str(arr.dtype),
        "shape": list(arr.shape),
        "b64": base64.b64encode(little.tobytes()).decode("ascii"),
    }


def decode_array(obj: dict[str, Any]) -> npt.NDArray[Any]:
    import numpy as np

    dtype = np.dtype(obj["dtype"]).newbyteorder("<")
    raw = base64.b64decode(obj["b64"])
    return np.frombuffer(raw, dtype=dtype).reshape(obj["shape"]).astype(obj["dtype"])


_MC_OPTIONS = DENSE_NAMES.index("mc_options")
STACK_NAMES: tuple[str, ...] = (
    "z_weak",
    "z_strong",
    "gain",
    *DENSE_NAMES,
    *(f"free*{n}" for n in DENSE_NAMES),
    "free",
    "free*z_weak",
    "free*z_strong",
    "free*gain",
)


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= -500 else 0.0


def stack_features(z_weak: float, z_strong: float, dense: list[float]) -> list[float]:
    """Inputs of the stacked gain head: the pair heads' logits, their probability gap, the
    request's shape, and the same again gated on "not a multiple-choice question" (free-form
    questions such as maths word problems behave differently from multiple choice)."""
    gain = _sigmoid(z_strong) - _sigmoid(z_weak)
    free = 1.0 if dense[_MC_OPTIONS] == 0 else 0.0
    return [
        z_weak,
        z_strong,
        gain,
        *dense,
        *(free * d for d in dense),
        free,
        free * z_weak,
        free * z_strong,
        free * gain,
    ]


@dataclass(frozen=True, slots=True)
class Prediction:
    """All outputs of the model for one request."""

    outputs: dict[str, float]  # head column → probability
    known_keys: int  # how many of the request's text keys the model knows
    cues: list[tuple[int, str]]  # taxonomy categories whose cue words appear
    gain: float  # stacked estimate of the strong reference model's gain (RouteLLM score)

    def tier_probs(self) -> tuple[float, float, float]:
        return (self.outputs["tier:1"], self.outputs["tier:2"], self.outputs["tier:3"])


class RouterModel:
    """A loaded artifact. ``predict`` is pure and thread-safe (read-only arrays)."""

    def __init__(self, data: dict[str, Any], source: str = "<memory>") -> None:
        import numpy as np

        if data.get("format") != ARTIFACT_FORMAT:
            raise ConfigError(f"{source}: not a tierwise router artifact")
        if data.get("format_version") != ARTIFACT_VERSION:
            raise ConfigError(
                f"{source}: artifact format version {data.get('format_version')!r} is not "
                f"supported (this tierwise reads version {ARTIFACT_VERSION})"
            )
        if tuple(data["dense_names"]) != DENSE_NAMES:
            raise ConfigError(f"{source}: dense features differ from this tierwise's features")
        self.source = source
        self.name: str = data["name"]
        self.card: dict[str, Any] = data.get("card", {})
        self.columns: list[str] = list(data["columns"])
        self.groups: dict[str, dict[str, Any]] = data["groups"]
        self.index: dict[str, int] = {k: i for i, k in enumerate(data["vocab"])}
        self._sparse = decode_array(data["sparse_weights"]).astype(np.float64)
        self._idf2 = decode_array(data["idf2"]).astype(np.float64)
        stack = data["stack"]
        if tuple(stack["names"]) != STACK_NAMES:
            raise ConfigError(f"{source}: stacked gain head inputs differ from this tierwise's")
        self._stack_mean = np.asarray(stack["mean"], dtype=np.float64)
        self._stack_scale = np.asarray(stack["scale"], dtype=np.float64)
        self._stack_w = np.asarray(stack["weights"], dtype=np.float64)
        self._stack_b = float(stack["bias"])
        self._stack_free_only = stack.get("applies_to", "all") == "free"
        self._col_weak = self.columns.index("rl:weak")
        self._col_strong = self.columns.index("rl:strong")
        self._dense_mean = np.asarray(data["dense_mean"], dtype=np.float64)
        self._dense_scale = np.asarray(data["dense_scale"], dtype=np.float64)
        self._dense_w = np.asarray(data["dense_weights"], dtype=np.float64)
        self._bias = np.asarray(data["bias"], dtype=np.float64)
        n = len(self.columns)
        if self._sparse.shape != (len(self.index), n) or self._dense_w.shape != (
            len(DENSE_NAMES),
            n,
        ):
            raise ConfigError(f"{source}: weight shapes do not match the vocabulary and columns")
        self._np = np
        # Fast path for the product's decision: only the taxonomy head, with idf² alongside so
        # one gather gives both the weights' sum and the norm.
        tier_cols = list(self.groups["tier"]["columns"])
        self._tier_sparse = np.ascontiguousarray(
            np.hstack([self._sparse[:, tier_cols], self._idf2[:, None]])
        )
        self._tier_dense_w = np.ascontiguousarray(
            self._dense_w[:, tier_cols] / self._dense_scale[:, None]
        )
        self._tier_bias = [
            float(b)
            for b in self._bias[tier_cols]
            - (self._dense_mean / self._dense_scale) @ self._dense_w[:, tier_cols]
        ]

    @classmethod
    def load(cls, path: str | Path | None = None) -> RouterModel:
        """Load an artifact file, or the one shipped in the package."""
        if path is None:
            ref = resources.files("tierwise") / "models" / DEFAULT_ARTIFACT
            return cls(json.loads(ref.read_text(encoding="utf-8")), f"tierwise/models/{ref.name}")
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read model artifact {p}: {exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}: not valid JSON: {exc}") from exc
        return cls(data, str(p))

    def logits(
        self, prompt: str, system: str = ""
    ) -> tuple[npt.NDArray[np.float64], int, set[str], list[float]]:
        """Every column's logit; text keys are idf-weighted and L2-normalised (as in training)."""
        np = self._np
        keys, dense = featurize(prompt, system)
        index = self.index
        idx = [i for i in map(index.get, keys) if i is not None]
        scaled = (np.asarray(dense) - self._dense_mean) / self._dense_scale
        z = self._bias + scaled @ self._dense_w
        if idx:
            z = z + self._sparse[idx].sum(axis=0) / math.sqrt(float(self._idf2[idx].sum()))
        return z, len(idx), keys, dense

    def tier_probs(
        self, prompt: str, system: str = ""
    ) -> tuple[tuple[float, float, float], int, set[str]]:
        """P(level 1, 2, 3) alone — the decision's fast path (same numbers as :meth:`predict`)."""
        keys, dense = featurize(prompt, system)
        index = self.index
        idx = [i for i in map(index.get, keys) if i is not None]
        z = [float(v) for v in self._np.asarray(dense) @ self._tier_dense_w]
        if idx:
            summed = self._tier_sparse[idx].sum(axis=0).tolist()
            norm = math.sqrt(summed[3])
            z = [z[j] + summed[j] / norm for j in range(3)]
        z = [z[j] + self._tier_bias[j] for j in range(3)]
        top = max(z)
        e = [math.exp(v - top) for v in z]
        total = e[0] + e[1] + e[2]
        return (e[0] / total, e[1] / total, e[2] / total), len(idx), keys

    def predict(self, prompt: str, system: str = "") -> Prediction:
        np = self._np
        z, known, keys, dense = self.logits(prompt, system)
        out = np.empty_like(z)
        for group in self.groups.values():
            cols = group["columns"]
            if group["kind"] == "softmax":
                e = np.exp(z[cols] - z[cols].max())
                out[cols] = e / e.sum()
            else:
                out[cols] = 1.0 / (1.0 + np.exp(-z[cols]))
        values = out.tolist()
        z_weak, z_strong = float(z[self._col_weak]), float(z[self._col_strong])
        if self._stack_free_only and dense[_MC_OPTIONS] > 0:
            gain = _sigmoid(z_strong) - _sigmoid(z_weak)
        else:
            stacked = np.asarray(stack_features(z_weak, z_strong, dense))
            gain = self._stack_b + float(
                ((stacked - self._stack_mean) / self._stack_scale) @ self._stack_w
            )
        return Prediction(
            dict(zip(self.columns, values, strict=True)), known, cue_categories(keys), gain
        )


@cache
def default_model() -> RouterModel:
    """The shipped artifact, loaded once per process."""
    return RouterModel.load()


def tier_quality(probs: tuple[float, float, float], n_tiers: int) -> list[float]:
    """Predicted quality of each of ``n_tiers`` ordered tiers, cheapest first.

    Tier ``i`` covers the taxonomy up to level ``1 + 2·i/(n−1)``; its quality is the
    probability that the request needs no more than that (a level only partly covered counts
    in proportion). Three tiers: (P1, P1+P2, 1); two: (P1, 1); five: (P1, P1+P2/2, P1+P2,
    P1+P2+P3/2, 1). The top tier is always 1.
    """
    if n_tiers == 1:
        return [1.0]
    out: list[float] = []
    for i in range(n_tiers - 1):
        cover = 1.0 + 2.0 * i / (n_tiers - 1)
        q = sum(
            p * min(1.0, max(0.0, cover - level + 1.0))
            for level, p in zip(LEVELS, probs, strict=True)
        )
        out.append(min(1.0, q))
    out.append(1.0)  # the top tier covers every level
    return out


SHAPE_CONFIDENCE = 0.8
LARGE_CONTEXT_TOKENS = 50_000


def shape_floor(request: ClassifyInput) -> tuple[int, str]:
    """The lowest level a conversation's shape allows, and why (1, "" when it sets none).

    A large context needs the top tier's long-context reasoning; tools, attachments and long
    multi-turn histories need at least the middle tier (the lesson's taxonomy puts
    "multi-step reasoning across large contexts" at tier 3)."""
    if request.context_tokens is not None and request.context_tokens > LARGE_CONTEXT_TOKENS:
        return 3, f"~{request.context_tokens} input tokens"
    reasons = []
    if request.tools:
        reasons.append(f"{request.tools} tool{'s' if request.tools > 1 else ''}")
    if request.attachments:
        reasons.append(f"{request.attachments} attachment{'s' if request.attachments > 1 else ''}")
    if request.turns > 12:
        reasons.append(f"{request.turns} turns")
    return (2, ", ".join(reasons)) if reasons else (1, "")


class LearnedClassifier:
    """The default classifier: the shipped linear model, no I/O, microseconds per decision.

    ``tiers`` are the configured tier names, cheapest first; the classification carries each
    tier's predicted quality under those names for the policy. A request with no word the model
    knows and no taxonomy cue gets an abstention (level 2, confidence 0.4, no per-tier
    quality), so the policy's low-confidence rule sends it to the default tier.
    """

    name = _NAME

    def __init__(self, tiers: list[str] | None = None, *, model: RouterModel | None = None) -> None:
        self.model = model or default_model()
        self.tiers = list(tiers) if tiers else ["haiku", "sonnet", "opus"]

    def classify_now(self, request: ClassifyInput) -> Classification:
        start = time.perf_counter()
        probs, known, keys = self.model.tier_probs(request.prompt, request.system)
        cue_list = cue_categories(keys)
        if known == 0 and not cue_list:
            return Classification(
                level=2,
                confidence=ABSTAIN_CONFIDENCE,
                reasoning="no known words or taxonomy cues; abstaining",
                classifier=_NAME,
                latency_ms=(time.perf_counter() - start) * 1000,
            )
        level = max(LEVELS, key=lambda lv: (probs[lv - 1], lv == 2))
        need = (probs[1] + 2.0 * probs[2]) / 2.0  # expected level, scaled to 0..1
        quality = tier_quality(probs, len(self.tiers))
        cues = ", ".join(c for lv, c in cue_list if lv == level) or "no taxonomy cue"
        confidence = probs[level - 1]
        floor, why = shape_floor(request)
        note = ""
        if floor > level:
            # The text model sees one turn; the conversation's shape sets a minimum tier.
            cut = round((floor - 1) * (len(self.tiers) - 1) / 2)
            quality = [0.0 if i < cut else q for i, q in enumerate(quality)]
            level, confidence = floor, max(confidence, SHAPE_CONFIDENCE)
            note = f"; conversation shape ({why}) needs at least {self.tiers[cut]}"
        shown = " / ".join(f"{n} {q:.2f}" for n, q in zip(self.tiers, quality, strict=True))
        return Classification(
            level=level,
            confidence=round(confidence, 3),
            reasoning=f"{_LEVEL_NAMES[level]} task ({cues}); predicted quality {shown}{note}",
            classifier=_NAME,
            latency_ms=(time.perf_counter() - start) * 1000,
            score=need,
            tier_quality=dict(zip(self.tiers, quality, strict=True)),
        )

    async def classify(self, request: ClassifyInput) -> Classification:
        return self.classify_now(request)
