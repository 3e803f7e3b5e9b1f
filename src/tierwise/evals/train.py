"""``tierwise train``: rebuild the shipped prior (the learned classifier's artifact).

Protocol: only *train* halves are read (the RouteLLM and Arena prompts by the data README's
hash rule after removing contaminated prompts) plus tierwise's own tier corpus (the held-out tier
prompts live in a separate file that training never opens). Only sources whose licence allows
redistributing a derived artifact train it (:data:`SOURCES`); RouterBench, whose licence is not
stated, is read only to validate.

The model's form (features and heads, :class:`PriorSpec`) was chosen by leave-one-source-out
validation (``training/select_prior.py``, table in EVALUATION.md): each candidate trained on all
licence-clean sources but one and scored by APGR on the one left out; the best mean
out-of-source APGR won. The tier head's C is chosen by template-grouped cross-validation on the
corpus. The model card records the SHA-256 of every file read, each source's licence, the rows
used, and these choices; test-split numbers come from ``tierwise eval`` (and ``train --eval``),
never from here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import math
import pickle
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tierwise.classifiers.learned import (
    ARTIFACT_FORMAT,
    ARTIFACT_VERSION,
    artifact_id,
    encode_array,
)
from tierwise.evals import datasets as ds
from tierwise.evals.linear import fit_logistic
from tierwise.taxonomy import fingerprint
from tierwise.textfeatures import DENSE_NAMES, MC_OPTIONS, featurize

# The same two models under their RouterBench and Arena names.
RB_WEAK, RB_STRONG = "mistralai/mixtral-8x7b-chat", "gpt-4-1106-preview"
ARENA_WEAK, ARENA_STRONG = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
# Arena's other judged models, by their mean score on the train half: the weak class scores
# like Mixtral (5.9–6.6 of 10), the strong class is GPT-4 (8.5–8.7).
ARENA_WEAK_CLASS = (
    "claude-1",
    "claude-instant-1",
    "mistralai/Mixtral-8x7B-Instruct-v0.1",
    "claude-2.1",
    "gpt-3.5-turbo-1106",
    "gpt-3.5-turbo",
)
ARENA_STRONG_CLASS = ("gpt-4-0314", "gpt-4-1106-preview")


@dataclass(frozen=True, slots=True)
class SourceInfo:
    title: str
    licence: str
    trains_shipped_model: bool


SOURCES: dict[str, SourceInfo] = {
    "mmlu": SourceInfo(
        "RouteLLM MMLU responses (lm-sys/RouteLLM; questions from MMLU)",
        "Apache-2.0 (RouteLLM data); MMLU questions MIT",
        True,
    ),
    "gsm8k": SourceInfo(
        "RouteLLM GSM8K responses (lm-sys/RouteLLM; questions from GSM8K)",
        "Apache-2.0 (RouteLLM data); GSM8K questions MIT",
        True,
    ),
    "arena": SourceInfo(
        "Arena-bench v1 judge scores (lmarena/arena-hard-auto)", "Apache-2.0", True
    ),
    "corpus": SourceInfo(
        "tierwise tier corpus (src/tierwise/data/tier_corpus.jsonl, hand-written)",
        "Apache-2.0 (this project)",
        True,
    ),
    "routerbench": SourceInfo(
        "RouterBench subsets (Hu et al. 2024) as redistributed in shuhao02/RouterDC",
        "none stated (neither the Hugging Face dataset card nor the RouterDC repository "
        "names one): validation and evaluation only",
        False,
    ),
}
CLEAN: tuple[str, ...] = tuple(n for n, i in SOURCES.items() if i.trains_shipped_model)
ALL_SOURCES: tuple[str, ...] = tuple(SOURCES)
CORPUS_WEAK_QUALITY = {1: 1.0, 2: 0.5, 3: 0.0}


def corpus_path() -> Path:
    return Path(str(resources.files("tierwise") / "data" / "tier_corpus.jsonl"))


@dataclass
class Source:
    """One source's rows for the gain heads: prompts and the weak/strong models' quality in
    [0, 1] (judge scores rescaled; the tier corpus's levels as a proxy: the weak model is good
    on level 1, half good on level 2, not on level 3; the strong one always)."""

    name: str
    prompts: list[str]
    systems: list[str]
    weak: npt.NDArray[np.float64]
    strong: npt.NDArray[np.float64]
    levels: list[int] = field(default_factory=list)  # the tier corpus's labels
    groups: list[str] = field(default_factory=list)  # the tier corpus's templates
    # denoised training labels (Arena: the mean judge score of a class of models)
    train_weak: npt.NDArray[np.float64] | None = None
    train_strong: npt.NDArray[np.float64] | None = None


def _class_mean(quality: dict[str, float], models: Sequence[str]) -> float:
    vals = [quality[m] for m in models if m in quality]
    return (sum(vals) / len(vals) - 1.0) / 9.0


def load_sources(
    data_dir: Path, corpus: Path | None = None, split: ds.Split = "train"
) -> dict[str, Source]:
    """Every source's rows of ``split`` (the tier corpus is all training data)."""
    out: dict[str, Source] = {}
    for bench in ("mmlu", "gsm8k"):
        items = ds.load_routellm(data_dir, bench, split)
        out[bench] = Source(
            bench,
            [i.prompt for i in items],
            [""] * len(items),
            np.array([i.weak for i in items]),
            np.array([i.strong for i in items]),
        )
    arena = [
        a
        for a in ds.load_arena(data_dir, split)
        if ARENA_WEAK in a.quality and ARENA_STRONG in a.quality
    ]
    out["arena"] = Source(
        "arena",
        [a.prompt for a in arena],
        [""] * len(arena),
        np.array([(a.quality[ARENA_WEAK] - 1.0) / 9.0 for a in arena]),
        np.array([(a.quality[ARENA_STRONG] - 1.0) / 9.0 for a in arena]),
        train_weak=np.array([_class_mean(a.quality, ARENA_WEAK_CLASS) for a in arena]),
        train_strong=np.array([_class_mean(a.quality, ARENA_STRONG_CLASS) for a in arena]),
    )
    tiers = ds.load_tier_file(corpus or corpus_path())
    out["corpus"] = Source(
        "corpus",
        [t.prompt for t in tiers],
        [t.system for t in tiers],
        np.array([CORPUS_WEAK_QUALITY[t.tier] for t in tiers]),
        np.ones(len(tiers)),
        levels=[t.tier for t in tiers],
        groups=[t.template or f"row{i}" for i, t in enumerate(tiers)],
    )
    rb = [
        r
        for r in ds.load_routerbench(data_dir, "train" if split == "all" else split)
        if RB_WEAK in r.quality and RB_STRONG in r.quality
    ]
    out["routerbench"] = Source(
        "routerbench",
        [r.prompt for r in rb],
        [""] * len(rb),
        np.array([r.quality[RB_WEAK] for r in rb]),
        np.array([r.quality[RB_STRONG] for r in rb]),
    )
    return out


def data_files(data_dir: Path, corpus: Path | None = None) -> dict[str, str]:
    """SHA-256 of every file training reads (for the model card)."""
    routellm = data_dir / "routellm" if (data_dir / "routellm").is_dir() else data_dir
    files = [
        *sorted((routellm / "mmlu" / "responses").glob("mmlu_*.csv")),
        routellm / "mmlu" / "contaminated_prompts.jsonl",
        routellm / "gsm8k" / "gsm8k_responses.csv",
        routellm / "gsm8k" / "contaminated_prompts.jsonl",
        data_dir / "arena-bench-v1" / "question.jsonl",
        data_dir / "arena-bench-v1" / "scores.csv",
    ]
    out: dict[str, str] = {}
    for p in files:
        if p.is_file():
            try:
                name = str(p.relative_to(data_dir))
            except ValueError:
                name = p.name
            out[name] = ds.file_sha256(p)
    c = corpus or corpus_path()
    out[f"tierwise:{c.name}"] = ds.file_sha256(c)
    return out


# -- features ----------------------------------------------------------------------------------
Feats = dict[tuple[str, str], tuple[set[str], list[float]]]


class FeatureCache:
    """featurize() of every (prompt, system), optionally kept in a pickle on disk (keyed by the
    featuriser's code and the taxonomy, so a change of either starts afresh)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.path: Path | None = None
        self.data: Feats = {}
        if folder is not None:
            code = Path(sys.modules["tierwise.textfeatures"].__file__ or "").read_bytes()
            tag = hashlib.sha256(code + fingerprint().encode()).hexdigest()[:16]
            self.path = Path(folder) / f"features-{tag}.pkl"
            if self.path.is_file():
                with self.path.open("rb") as fh:
                    self.data = pickle.load(fh)  # noqa: S301 - our own cache file

    def fill(self, pairs: Sequence[tuple[str, str]], tick: Callable[[], None] | None = None) -> int:
        missing = 0
        for pair in pairs:
            if pair not in self.data:
                self.data[pair] = featurize(*pair)
                missing += 1
            if tick is not None:
                tick()
        if missing and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("wb") as fh:
                pickle.dump(self.data, fh)
        return missing


@dataclass
class Space:
    """Vocabulary, smoothed idf (as scikit-learn computes it) and the dense features' scaling."""

    vocab: list[str]
    index: dict[str, int]
    idf: npt.NDArray[np.float64]
    mean: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]


def _keep(kind: str) -> Callable[[str], bool]:
    if kind == "none":
        return lambda k: False
    if kind == "uni":
        return lambda k: " " not in k and not k.startswith("s:")
    return lambda k: True


def build_space(
    keysets: Sequence[set[str]],
    dense: npt.NDArray[np.float64],
    *,
    kind: str = "keys",
    min_df: int = 3,
    max_features: int = 30_000,
) -> Space:
    """The ``max_features`` most frequent keys seen in ≥ ``min_df`` of the given prompts."""
    keep = _keep(kind)
    df: dict[str, int] = {}
    for ks in keysets:
        for k in ks:
            df[k] = df.get(k, 0) + 1
    kept = sorted((k for k, c in df.items() if c >= min_df and keep(k)), key=lambda k: (-df[k], k))
    kept = sorted(kept[:max_features])
    n = len(keysets)
    idf = np.array([math.log((1 + n) / (1 + df[k])) + 1.0 for k in kept])
    scale = dense.std(axis=0)
    scale[scale < 1e-6] = 1.0  # constant (up to rounding): left unscaled
    return Space(kept, {k: i for i, k in enumerate(kept)}, idf, dense.mean(axis=0), scale)


def design(
    space: Space, keysets: Sequence[set[str]], dense: npt.NDArray[np.float64], with_dense: bool
) -> Any:
    """CSR matrix: idf-weighted, L2-normalised keys (and the standardised dense features)."""
    from scipy import sparse  # type: ignore[import-untyped,unused-ignore]

    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for r, ks in enumerate(keysets):
        idx = [j for j in map(space.index.get, ks) if j is not None]
        if not idx:
            continue
        w = space.idf[idx]
        w = w / math.sqrt(float((w**2).sum()))
        rows.extend([r] * len(idx))
        cols.extend(idx)
        vals.extend(w.tolist())
    x = sparse.csr_matrix((vals, (rows, cols)), shape=(len(keysets), len(space.vocab)))
    if with_dense:
        d = (dense - space.mean) / space.scale
        x = sparse.hstack([x, sparse.csr_matrix(d)]).tocsr()
    return x


def augment(x: Any, is_mc: npt.NDArray[np.bool_]) -> Any:
    """Feature augmentation by the prompt's format: shared, multiple-choice and free-form copies
    of every feature (Daumé's "frustratingly easy" domain adaptation, with the format as the
    domain: it is visible at decision time, unlike the source)."""
    from scipy import sparse  # type: ignore[import-untyped,unused-ignore]

    mc = sparse.diags(is_mc.astype(np.float64))
    free = sparse.diags(1.0 - is_mc.astype(np.float64))
    return sparse.hstack([x, mc @ x, free @ x]).tocsr()


# -- the gain heads ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PriorSpec:
    """The form of the shipped prior's gain heads (what leave-one-source-out validation chose
    among the candidates of ``training/select_prior.py``)."""

    name: str
    features: str = "keys"  # "keys": words, bigrams, symbols, system words | "uni" | "none"
    dense: bool = False  # the shape features too
    balance: bool = False  # equal total weight per source
    augment: bool = False  # shared + multiple-choice + free-form copies
    c: float = 1.0  # inverse L2 strength of the two logistic heads
    sources: tuple[str, ...] = CLEAN
    arena_multi: bool = False  # Arena rows labelled by classes of models, not one pair
    source_bias: bool = False  # a free intercept per source while fitting (their mean after)
    min_df: int = 3
    max_features: int = 30_000


def row_weights(src_of: npt.NDArray[Any], balance: bool) -> npt.NDArray[np.float64]:
    """Per-row weights with mean 1: uniform, or equal total weight per source."""
    w = np.ones(len(src_of))
    if balance:
        names = np.unique(src_of)
        for n in names:
            sel = src_of == n
            w[sel] = len(src_of) / (len(names) * sel.sum())
    return w


def text_columns(space: Space, kind: str) -> npt.NDArray[np.intp]:
    """The vocabulary columns a head of this kind reads (the keys are normalised over the whole
    vocabulary either way, as the decision's single gather does)."""
    keep = _keep(kind)
    return np.array([i for i, k in enumerate(space.vocab) if keep(k)], dtype=np.intp)


@dataclass
class GainHeads:
    """The two logistic heads (P(weak good), P(strong good)) over one feature space."""

    spec: PriorSpec
    space: Space
    weak: Any  # LinearFit
    strong: Any
    columns: npt.NDArray[np.intp] = field(default_factory=lambda: np.zeros(0, dtype=np.intp))

    def matrix(self, keysets: Sequence[set[str]], dense: npt.NDArray[np.float64]) -> Any:
        from scipy import sparse  # type: ignore[import-untyped,unused-ignore]

        full = design(self.space, keysets, dense, with_dense=False)
        x = full[:, self.columns]
        if self.spec.dense:
            d = (dense - self.space.mean) / self.space.scale
            x = sparse.hstack([x, sparse.csr_matrix(d)]).tocsr()
        if self.spec.augment:
            x = augment(x, dense[:, MC_OPTIONS] > 0)
        return x

    def score(self, source: Source, feats: Feats) -> npt.NDArray[np.float64]:
        from tierwise.evals.linear import sigmoid

        pairs = list(zip(source.prompts, source.systems, strict=True))
        x = self.matrix([feats[p][0] for p in pairs], np.array([feats[p][1] for p in pairs]))
        return sigmoid(self.strong.decision(x)) - sigmoid(self.weak.decision(x))


def fit_gain_heads(
    spec: PriorSpec, train: Sequence[Source], feats: Feats, space: Space | None = None
) -> GainHeads:
    pairs = [p for s in train for p in zip(s.prompts, s.systems, strict=True)]
    keysets = [feats[p][0] for p in pairs]
    dense = np.array([feats[p][1] for p in pairs])
    if space is None:
        space = build_space(keysets, dense, min_df=spec.min_df, max_features=spec.max_features)
    src_of = np.array([s.name for s in train for _ in s.prompts])

    def labels(which: str) -> npt.NDArray[np.float64]:
        parts = []
        for s in train:
            denoised = s.train_weak if which == "weak" else s.train_strong
            plain = s.weak if which == "weak" else s.strong
            parts.append(denoised if spec.arena_multi and denoised is not None else plain)
        return np.concatenate(parts)

    heads = GainHeads(spec, space, None, None, text_columns(space, spec.features))
    x = heads.matrix(keysets, dense)
    w = row_weights(src_of, spec.balance)
    if not spec.source_bias:
        heads.weak = fit_logistic(x, labels("weak"), l2=1.0 / spec.c, weights=w)
        heads.strong = fit_logistic(x, labels("strong"), l2=1.0 / spec.c, weights=w)
        return heads
    # One indicator column per source absorbs the sources' different base rates, so the
    # features learn what varies *within* a source; unknown at decision time, the indicators
    # are replaced by their average (folded into the intercept).
    from scipy import sparse  # type: ignore[import-untyped,unused-ignore]

    from tierwise.evals.linear import LinearFit

    names = sorted({s.name for s in train})
    onehot = sparse.csr_matrix(
        (np.ones(len(src_of)), (np.arange(len(src_of)), [names.index(n) for n in src_of])),
        shape=(len(src_of), len(names)),
    )
    xs = sparse.hstack([x, onehot]).tocsr()
    k = len(names)
    for which in ("weak", "strong"):
        fit = fit_logistic(xs, labels(which), l2=1.0 / spec.c, weights=w)
        share = np.array([(w * (src_of == n)).sum() for n in names]) / w.sum()
        folded = LinearFit(
            fit.coef[:-k],
            fit.intercept + float(share @ fit.coef[-k:]),
            fit.iterations,
            fit.converged,
        )
        setattr(heads, which, folded)
    return heads


# -- the tier head -----------------------------------------------------------------------------
def _fit_tier(x: Any, y: npt.NDArray[np.int64], c: float) -> Any:
    from tierwise.evals.linear import fit_softmax

    return fit_softmax(x, y, 3, l2=1.0 / c)


def tier_cv(
    x: Any, y: npt.NDArray[np.int64], groups: Sequence[str], c: float, k: int = 5
) -> tuple[float, float]:
    """Template-grouped k-fold CV (every prompt of one template in one fold): accuracy, log
    loss."""
    names = sorted(set(groups))
    order = np.random.default_rng(0).permutation(len(names))
    fold_of_group = {names[g]: i % k for i, g in enumerate(order)}
    fold = np.array([fold_of_group[g] for g in groups])
    correct, loss = 0, 0.0
    for f in range(k):
        held = fold == f
        m = _fit_tier(x[~held], y[~held], c)
        proba = m.predict_proba(x[held])
        correct += int((proba.argmax(axis=1) == y[held]).sum())
        loss -= float(np.log(np.clip(proba[np.arange(held.sum()), y[held]], 1e-9, 1)).sum())
    return correct / len(y), loss / len(y)


# -- the whole build ---------------------------------------------------------------------------
class StageRunner:
    """What :func:`train` reports progress to: ``stage(name, total)`` yields ``advance()``."""

    @contextlib.contextmanager
    def stage(self, name: str, total: float | None = None) -> Iterator[Callable[..., None]]:
        yield lambda *a, **k: None


TRAIN_STAGES = (
    "reading the data",
    "featurising prompts",
    "building the vocabulary",
    "tier head (grouped CV)",
    "gain heads",
    "assembling the artifact",
)


def train(
    data_dir: Path,
    *,
    spec: PriorSpec | None = None,
    corpus: Path | None = None,
    name: str = "router-v2",
    tier_c_grid: Sequence[float] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0),
    folds: int = 5,
    stages: Any = None,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Train the tier head and the gain heads on the licence-clean train halves and return
    the artifact (a JSON-able dict)."""
    spec = spec or SELECTED
    run = stages or StageRunner()
    data_dir = Path(data_dir)
    timings: dict[str, float] = {}
    clock = dt.datetime.now

    t0 = clock()
    with run.stage("reading the data", 1) as advance:
        sources = load_sources(data_dir, corpus)
        files = data_files(data_dir, corpus)
        advance()
    timings["read"] = (clock() - t0).total_seconds()
    train_sources = [sources[n] for n in spec.sources]
    corpus_src = sources["corpus"]
    pairs = list(
        dict.fromkeys(
            [
                p
                for s in [*train_sources, corpus_src]
                for p in zip(s.prompts, s.systems, strict=True)
            ]
        )
    )
    t0 = clock()
    cache = FeatureCache(cache_dir)
    with run.stage("featurising prompts", len(pairs)) as advance:
        cache.fill(pairs, advance)
    feats = cache.data
    timings["featurise"] = (clock() - t0).total_seconds()

    t0 = clock()
    with run.stage("building the vocabulary", 1) as advance:
        keysets = [feats[p][0] for p in pairs]
        dense_all = np.array([feats[p][1] for p in pairs])
        space = build_space(keysets, dense_all, min_df=spec.min_df, max_features=spec.max_features)
        advance()
    timings["vocabulary"] = (clock() - t0).total_seconds()

    t0 = clock()
    tier_pairs = list(zip(corpus_src.prompts, corpus_src.systems, strict=True))
    xt = design(
        space,
        [feats[p][0] for p in tier_pairs],
        np.array([feats[p][1] for p in tier_pairs]),
        with_dense=True,
    )
    yt = np.array(corpus_src.levels) - 1
    with run.stage("tier head (grouped CV)", len(tier_c_grid) * folds + 1) as advance:
        cv: dict[float, tuple[float, float]] = {}
        for c in tier_c_grid:
            cv[c] = tier_cv(xt, yt, corpus_src.groups, c, folds)
            advance(folds)
        tier_c = min(cv, key=lambda c: cv[c][1])  # best held-out-template log loss
        tier_model = _fit_tier(xt, yt, tier_c)
        advance()
    timings["tier_head"] = (clock() - t0).total_seconds()

    t0 = clock()
    with run.stage("gain heads", 2) as advance:
        gain = fit_gain_heads(spec, train_sources, feats, space=space)
        advance(2)
    timings["gain_heads"] = (clock() - t0).total_seconds()

    with run.stage("assembling the artifact", 1) as advance:
        artifact = _assemble(name, space, tier_model, gain, spec)
        artifact["card"] = _card(files, sources, spec, tier_c, cv, gain, timings)
        advance()
    return artifact


def _card(
    files: dict[str, str],
    sources: dict[str, Source],
    spec: PriorSpec,
    tier_c: float,
    cv: dict[float, tuple[float, float]],
    gain: GainHeads,
    timings: dict[str, float],
) -> dict[str, Any]:
    rows = {n: len(sources[n].prompts) for n in spec.sources}
    rows["corpus (tier head)"] = len(sources["corpus"].prompts)
    return {
        "data_sha256": files,
        "sources": {
            n: {**asdict(i), "rows_used": rows.get(n, 0) if n in spec.sources else 0}
            for n, i in SOURCES.items()
        },
        "rows": rows,
        "spec": asdict(spec),
        "tier_head": {
            "C": tier_c,
            "grouped_cv": {
                str(c): {"accuracy": round(a, 4), "log_loss": round(ll, 4)}
                for c, (a, ll) in cv.items()
            },
        },
        "gain_heads": {
            "weak": {"iterations": gain.weak.iterations, "converged": gain.weak.converged},
            "strong": {
                "iterations": gain.strong.iterations,
                "converged": gain.strong.converged,
            },
        },
        "stage_seconds": {k: round(v, 1) for k, v in timings.items()},
        "protocol": PROTOCOL,
    }


def _assemble(
    name: str, space: Space, tier_model: Any, gain: GainHeads, spec: PriorSpec
) -> dict[str, Any]:
    """Fold every head into one (vocabulary × columns) text matrix and a dense matrix."""
    v, d = len(space.vocab), len(DENSE_NAMES)
    tier_coef = np.asarray(tier_model.coef, dtype=np.float64)  # (3, v + d)
    columns = ["tier:1", "tier:2", "tier:3"]
    text_cols = [tier_coef[i, :v] for i in range(3)]
    dense_cols = [tier_coef[i, v:] for i in range(3)]
    bias = [float(b) for b in tier_model.intercept]

    def split(coef: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], ...]:
        """(text, dense) weights of a gain head over the full vocabulary, per format."""
        gv = len(gain.columns)
        width = gv + (d if spec.dense else 0)
        parts = [coef[i * width : (i + 1) * width] for i in range(3 if spec.augment else 1)]

        def widen(part: npt.NDArray[np.float64]) -> tuple[Any, Any]:
            text = np.zeros(v)
            text[gain.columns] = part[:gv]
            dense = part[gv:] if spec.dense else np.zeros(d)
            return text, dense

        shared = widen(parts[0])
        if not spec.augment:
            return shared + shared
        mc, free = widen(parts[1]), widen(parts[2])
        return (shared[0] + mc[0], shared[1] + mc[1], shared[0] + free[0], shared[1] + free[1])

    formats: dict[str, dict[str, str]] = {}
    for head, fit in (("weak", gain.weak), ("strong", gain.strong)):
        t_mc, d_mc, t_free, d_free = split(np.asarray(fit.coef))
        if spec.augment:
            columns += [f"{head}|mc", f"{head}|free"]
            text_cols += [t_mc, t_free]
            dense_cols += [d_mc, d_free]
            bias += [fit.intercept, fit.intercept]
            formats[head] = {"mc": f"{head}|mc", "free": f"{head}|free"}
        else:
            columns.append(head)
            text_cols.append(t_mc)
            dense_cols.append(d_mc)
            bias.append(fit.intercept)
            formats[head] = {"mc": head, "free": head}
    text = np.column_stack(text_cols) * space.idf[:, None]  # idf folded into the weights
    dense = np.column_stack(dense_cols)
    artifact: dict[str, Any] = {
        "format": ARTIFACT_FORMAT,
        "format_version": ARTIFACT_VERSION,
        "name": name,
        "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "taxonomy": fingerprint(),
        "columns": columns,
        "formats": formats,
        "dense_names": list(DENSE_NAMES),
        "dense_mean": [round(float(x), 6) for x in space.mean],
        "dense_scale": [round(float(x), 6) for x in space.scale],
        "dense_weights": [[round(float(x), 6) for x in row] for row in dense],
        "bias": [round(float(b), 6) for b in bias],
        "vocab": space.vocab,
        "idf2": encode_array((space.idf**2).astype(np.float32)),
        "text_weights": encode_array(text.astype(np.float16)),
    }
    artifact["id"] = artifact_id(artifact)
    return artifact


# The candidate chosen by leave-one-source-out validation and the one-standard-error rule (see
# training/select_prior.py, docs/eval/selection.json and EVALUATION.md); `tierwise train`
# rebuilds exactly this.
SELECTED = PriorSpec(
    name="keys + 2 logistic heads, an intercept per source", features="keys", source_bias=True
)

PROTOCOL = (
    "Only train halves were read: RouteLLM MMLU/GSM8K and Arena prompts with "
    "sha256(prompt) % 2 == 0 after removing the contaminated prompts, and tierwise's tier "
    "corpus (the held-out tier prompts are a separate file that training never opens). Only "
    "sources whose licence allows redistributing a derived artifact trained it; RouterBench "
    "(no licence stated) was read only for validation. The form of the gain heads was chosen "
    "by leave-one-source-out validation (mean out-of-source APGR over the train halves); the "
    "tier head's C by template-grouped cross-validation on the corpus. Test-split metrics come "
    "from `tierwise eval`, never from training."
)


def write_artifact(artifact: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(artifact, separators=(",", ":")) + "\n", encoding="utf-8")
