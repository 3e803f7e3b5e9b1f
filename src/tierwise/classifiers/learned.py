"""The learned, local default classifier: one small linear model shipped in the package, and
optionally a deployment's adapter trained on its own ledger.

The artifact (``tierwise/models/router-v2.json``) holds a vocabulary of text keys, their
weights for every output column, weights for the dense features of the request's shape, and
the model card (data hashes, licences, metrics). ``tierwise train`` rebuilds it.

Outputs ("heads") of the one model, all linear in the same features:

* ``tier``: P(the request needs level 1, 2, 3) in the lesson's taxonomy (softmax), learned from
  tierwise's tier-labelled corpus. It gives the classification's level and confidence, and the
  *prior* per-tier predicted quality the policy uses (:func:`tier_quality`).
* ``weak`` / ``strong``: P(a weak / strong reference model answers well), learned from the
  licence-clean benchmark data (Mixtral-8x7B vs GPT-4-1106). Their difference, the expected
  gain of the strong model, is the classification's ``score`` (evaluated with the RouteLLM
  paper's metric); the model may hold one pair of columns per prompt format (multiple-choice
  or free-form) and uses the one matching the request.

An **adapter** (:class:`~tierwise.classifiers.adapter.Adapter`, written by ``tierwise train
--from-ledger``) corrects each cheaper tier's predicted quality with what this deployment's
judge verdicts and feedback showed; without one, the prior alone decides.

Decision cost: one featurisation (:func:`tierwise.textfeatures.featurize`), one vectorised
vocabulary look-up, one gather-and-sum of a few columns and one small dot product — no
Python loop over the vocabulary or the request's words. numpy is imported when the model is
loaded (router construction), never by ``import tierwise``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import time
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tierwise.errors import ConfigError
from tierwise.taxonomy import (
    LEVEL_NAMES,
    LEVELS,
    SHAPE_CONFIDENCE,
    cue_categories,
    fingerprint,
    floor_for,
    floor_tier_index,
    shape_floor,
)
from tierwise.textfeatures import DENSE_NAMES, MC_OPTIONS, featurize
from tierwise.types import Classification, ClassifyInput

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from tierwise.classifiers.adapter import Adapter

ARTIFACT_FORMAT = "tierwise-router"
ARTIFACT_VERSION = 2
DEFAULT_ARTIFACT = "router-v2.json"
ABSTAIN_CONFIDENCE = 0.4
_NAME = "learned"
# what the ledger stores of a request for learning (never its text): the prior's logits and the
# shape features (an adapter standardises them itself)
COMPACT_NAMES: tuple[str, ...] = (
    "z_tier1",
    "z_tier2",
    "z_tier3",
    "z_weak",
    "z_strong",
    *(f"d:{n}" for n in DENSE_NAMES),
)


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


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _softmax3(a: float, b: float, c: float) -> tuple[float, float, float]:
    top = max(a, b, c)
    ea, eb, ec = math.exp(a - top), math.exp(b - top), math.exp(c - top)
    total = ea + eb + ec
    return ea / total, eb / total, ec / total


@dataclass(frozen=True, slots=True)
class Prediction:
    """All outputs of the prior for one request."""

    tier_probs: tuple[float, float, float]  # P(level 1, 2, 3)
    weak: float  # P(the weak reference model answers well)
    strong: float  # P(the strong one does)
    known_keys: int  # how many of the request's text keys the model knows
    cues: list[tuple[int, str]]  # taxonomy categories whose cue words appear
    compact: list[float]  # the ledger's learning features (:data:`COMPACT_NAMES`)

    @property
    def gain(self) -> float:
        """The strong reference model's expected gain: the RouteLLM-style routing score."""
        return self.strong - self.weak


class RouterModel:
    """A loaded prior artifact. Read-only after construction, so thread-safe."""

    def __init__(self, data: dict[str, Any], source: str = "<memory>") -> None:
        import numpy as np

        if data.get("format") != ARTIFACT_FORMAT:
            raise ConfigError(f"{source}: not a tierwise router artifact")
        if data.get("format_version") != ARTIFACT_VERSION:
            raise ConfigError(
                f"{source}: artifact format version {data.get('format_version')!r} is not "
                f"supported (this tierwise reads version {ARTIFACT_VERSION}; retrain with "
                "`tierwise train`)"
            )
        if tuple(data.get("dense_names", ())) != DENSE_NAMES:
            raise ConfigError(f"{source}: dense features differ from this tierwise's features")
        if data.get("taxonomy") != fingerprint():
            raise ConfigError(
                f"{source}: trained on a different taxonomy definition "
                f"({data.get('taxonomy')!r}, this tierwise has {fingerprint()!r}); retrain"
            )
        self.source = source
        self.name: str = data["name"]
        self.model_id: str = data["id"]
        self.card: dict[str, Any] = data.get("card", {})
        self.columns: list[str] = list(data["columns"])
        col = {c: i for i, c in enumerate(self.columns)}
        try:
            self._tier_cols = [col["tier:1"], col["tier:2"], col["tier:3"]]
            formats = data["formats"]  # head → {"mc": column, "free": column}
            self._weak_cols = (col[formats["weak"]["mc"]], col[formats["weak"]["free"]])
            self._strong_cols = (col[formats["strong"]["mc"]], col[formats["strong"]["free"]])
        except KeyError as exc:
            raise ConfigError(f"{source}: artifact lacks the column {exc}") from exc
        self.vocab: list[str] = list(data["vocab"])
        self.index: dict[str, int] = {k: i for i, k in enumerate(self.vocab)}
        text = decode_array(data["text_weights"]).astype(np.float64)
        idf2 = decode_array(data["idf2"]).astype(np.float64)
        dense_w = np.asarray(data["dense_weights"], dtype=np.float64)
        self.dense_mean = np.asarray(data["dense_mean"], dtype=np.float64)
        self.dense_scale = np.asarray(data["dense_scale"], dtype=np.float64)
        bias = np.asarray(data["bias"], dtype=np.float64)
        n = len(self.columns)
        if (
            text.shape != (len(self.vocab), n)
            or idf2.shape != (len(self.vocab),)
            or dense_w.shape != (len(DENSE_NAMES), n)
            or bias.shape != (n,)
        ):
            raise ConfigError(f"{source}: weight shapes do not match the vocabulary and columns")
        self.text_weights = text
        self.idf2 = idf2
        self.dense_weights = dense_w
        self.bias = bias
        self._np = np
        # The decision's fast path: text weights with idf² as one more column, so one gather
        # gives every column's sum and the L2 norm; dense weights with the scaling folded in.
        self.gather = np.ascontiguousarray(np.hstack([text, idf2[:, None]]))
        self.dense_folded = np.ascontiguousarray(dense_w / self.dense_scale[:, None])
        self.bias_folded = bias - (self.dense_mean / self.dense_scale) @ dense_w

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
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: not a tierwise router artifact")
        return cls(data, str(p))

    @property
    def tag(self) -> str:
        """Name and content id: what the ledger records with a request's learning features."""
        return f"{self.name}@{self.model_id[:12]}"

    # -- one request ---------------------------------------------------------------------------
    def lookup(self, keys: set[str]) -> list[int]:
        """Vocabulary rows of the known keys (``map`` over the set: no Python-level loop body)."""
        return [i for i in map(self.index.get, keys) if i is not None]

    def raw_logits(
        self, rows: list[int], dense: Any, extra: Any = None
    ) -> tuple[list[float], list[float]]:
        """(every column's logit, ``extra`` columns' text scores) for one request.

        ``dense`` is the request's dense features (a list or an array); ``extra`` is an
        optional (vocabulary × k) matrix whose rows are gathered with the model's (an
        adapter's text weights), scored with the same L2 normalisation."""
        np = self._np
        z = self.bias_folded + np.dot(dense, self.dense_folded)
        extra_z: list[float] = []
        if rows:
            matrix = self.gather if extra is None else extra
            summed = np.add.reduce(matrix.take(rows, axis=0), axis=0)
            norm = math.sqrt(float(summed[-1]))
            if extra is None:
                z = z + summed[:-1] / norm
            else:
                k = summed.shape[0] - 1 - len(self.columns)
                z = z + summed[k:-1] / norm
                extra_z = (summed[:k] / norm).tolist()
        return z.tolist(), extra_z

    def read(
        self, z: list[float], dense: list[float]
    ) -> tuple[tuple[float, float, float], float, float, float, float]:
        """(P(level 1–3), P(weak good), P(strong good), z_weak, z_strong) from the logits."""
        t = self._tier_cols
        probs = _softmax3(z[t[0]], z[t[1]], z[t[2]])
        fmt = 0 if dense[MC_OPTIONS] > 0 else 1
        zw, zs = z[self._weak_cols[fmt]], z[self._strong_cols[fmt]]
        return probs, _sigmoid(zw), _sigmoid(zs), zw, zs

    def compact(self, z: list[float], dense: list[float], zw: float, zs: float) -> list[float]:
        t = self._tier_cols
        return [z[t[0]], z[t[1]], z[t[2]], zw, zs, *dense]

    def predict(self, prompt: str, system: str = "") -> Prediction:
        keys, dense = featurize(prompt, system)
        rows = self.lookup(keys)
        d = self._np.array(dense)
        z, _ = self.raw_logits(rows, d)
        probs, weak, strong, zw, zs = self.read(z, dense)
        return Prediction(
            probs, weak, strong, len(rows), cue_categories(keys), self.compact(z, dense, zw, zs)
        )

    def tier_probs(self, prompt: str, system: str = "") -> tuple[float, float, float]:
        return self.predict(prompt, system).tier_probs

    # -- many requests (training and evaluation) ----------------------------------------------
    def design(
        self, pairs: list[tuple[str, str]], tick: Any = None
    ) -> tuple[Any, npt.NDArray[np.float64]]:
        """(CSR matrix of the requests' normalised text keys over the vocabulary, their compact
        learning features) — what a head fitted on top of this prior reads. ``tick()`` is called
        after each request."""
        from scipy import sparse  # type: ignore[import-untyped,unused-ignore]

        np = self._np
        rows_i: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        compact = np.empty((len(pairs), len(COMPACT_NAMES)))
        idf = np.sqrt(self.idf2)
        for r, (prompt, system) in enumerate(pairs):
            keys, dense = featurize(prompt, system)
            found = self.lookup(keys)
            d = np.array(dense)
            z, _ = self.raw_logits(found, d)
            _, _, _, zw, zs = self.read(z, dense)
            compact[r] = self.compact(z, dense, zw, zs)
            if found:
                w = idf[found]
                w = w / math.sqrt(float((w**2).sum()))
                rows_i.extend([r] * len(found))
                cols.extend(found)
                vals.extend(w.tolist())
            if tick is not None:
                tick()
        x = sparse.csr_matrix((vals, (rows_i, cols)), shape=(len(pairs), len(self.vocab)))
        return x, compact


def artifact_id(data: dict[str, Any]) -> str:
    """The content id of an artifact: SHA-256 over its weights and vocabulary."""
    h = hashlib.sha256()
    for key in ("vocab", "columns", "text_weights", "idf2", "dense_weights", "bias"):
        h.update(json.dumps(data[key], sort_keys=True).encode("utf-8"))
    return h.hexdigest()


@cache
def default_model() -> RouterModel:
    """The shipped artifact, loaded once per process."""
    return RouterModel.load()


@cache
def _coverage(n_tiers: int) -> tuple[tuple[float, float, float], ...]:
    """Per tier below the top: how much of each level it covers (see :func:`tier_quality`)."""
    out = []
    for i in range(n_tiers - 1):
        cover = 1.0 + 2.0 * i / (n_tiers - 1)
        a, b, c = (min(1.0, max(0.0, cover - level + 1.0)) for level in LEVELS)
        out.append((a, b, c))
    return tuple(out)


def tier_quality(probs: tuple[float, float, float], n_tiers: int) -> list[float]:
    """Prior predicted quality of each of ``n_tiers`` ordered tiers, cheapest first.

    Tier ``i`` covers the taxonomy up to level ``1 + 2·i/(n−1)``; its quality is the
    probability that the request needs no more than that (a level only partly covered counts
    in proportion). Three tiers: (P1, P1+P2, 1); two: (P1, 1); five: (P1, P1+P2/2, P1+P2,
    P1+P2+P3/2, 1). The top tier is always 1.
    """
    if n_tiers == 1:
        return [1.0]
    p1, p2, p3 = probs
    out = [min(1.0, p1 * a + p2 * b + p3 * c) for a, b, c in _coverage(n_tiers)]
    out.append(1.0)  # the top tier covers every level
    return out


class LearnedClassifier:
    """The default classifier: the shipped prior (and an adapter, if one is active), no I/O,
    microseconds per decision.

    ``tiers`` are the configured tier names, cheapest first; the classification carries each
    tier's predicted quality under those names for the policy, the gain score, the confidence
    (the probability of the predicted level) and the compact learning features the ledger
    stores. A request with no word the model knows and no taxonomy cue gets an abstention
    (level 2, confidence 0.4, no per-tier quality), so the policy's low-confidence rule sends it
    to the default tier.
    """

    name = _NAME

    def __init__(
        self,
        tiers: list[str] | None = None,
        *,
        model: RouterModel | None = None,
        adapter: Adapter | None = None,
    ) -> None:
        self.model = model or default_model()
        self.tiers = list(tiers) if tiers else ["haiku", "sonnet", "opus"]
        self.adapter = adapter
        self._np = self.model._np
        self._extra: Any = None
        self.router_model = self.model.tag
        if adapter is not None:
            adapter.check(self.model, self.tiers)
            self.router_model = f"{self.model.tag}+{adapter.name}"
            if adapter.text_weights is not None:
                import numpy as np

                self._extra = np.ascontiguousarray(
                    np.hstack([adapter.text_weights, self.model.gather])
                )

    @classmethod
    def from_settings(cls, settings: Any) -> LearnedClassifier:
        """The classifier ``settings`` ask for: ``classifier.model`` names the prior and adapter
        (see :func:`tierwise.classifiers.adapter.resolve`)."""
        from tierwise.classifiers.adapter import resolve

        model, adapter = resolve(settings)
        return cls(settings.tier_names, model=model, adapter=adapter)

    def classify_now(self, request: ClassifyInput) -> Classification:
        start = time.perf_counter()
        model = self.model
        keys, dense = featurize(request.prompt, request.system)
        rows = model.lookup(keys)
        d = self._np.array(dense)
        z, extra_z = model.raw_logits(rows, d, self._extra)
        probs, weak, strong, zw, zs = model.read(z, dense)
        cue_list = cue_categories(keys)
        floor, why = shape_floor(request)
        if not rows and not cue_list and floor == 1:
            return Classification(
                level=2,
                confidence=ABSTAIN_CONFIDENCE,
                reasoning="no known words or taxonomy cues; abstaining",
                classifier=_NAME,
                latency_ms=(time.perf_counter() - start) * 1000,
                score=strong - weak,
                router_model=self.router_model,
            )
        p1, p2, p3 = probs
        level = 1 if p1 > p2 and p1 >= p3 else (3 if p3 > p2 else 2)
        confidence = probs[level - 1]
        n = len(self.tiers)
        quality = tier_quality(probs, n)
        compact = model.compact(z, dense, zw, zs)
        adjusted = ""
        if self.adapter is not None:
            quality = self.adapter.apply(quality, compact, extra_z)
            adjusted = f" ({self.adapter.name})"
        note = ""
        floor, why = floor_for(level, request)
        if floor > level:
            # The text model sees one turn; the conversation's shape sets a minimum tier.
            cut = floor_tier_index(floor, n)
            quality = [0.0 if i < cut else q for i, q in enumerate(quality)]
            level, confidence = floor, max(confidence, SHAPE_CONFIDENCE)
            note = f"; conversation shape ({why}) needs at least {self.tiers[cut]}"
        cues = ", ".join(c for lv, c in cue_list if lv == level) or "no taxonomy cue"
        shown = " / ".join(f"{t} {q:.2f}" for t, q in zip(self.tiers, quality, strict=True))
        return Classification(
            level=level,
            confidence=round(confidence, 3),
            reasoning=(
                f"{LEVEL_NAMES[level]} task ({cues}); predicted quality{adjusted} {shown}{note}"
            ),
            classifier=_NAME,
            latency_ms=(time.perf_counter() - start) * 1000,
            score=strong - weak,
            tier_quality=dict(zip(self.tiers, quality, strict=True)),
            features=tuple(compact),
            router_model=self.router_model,
        )

    async def classify(self, request: ClassifyInput) -> Classification:
        return self.classify_now(request)
