"""``tierwise train``: rebuild the learned classifier's artifact from the data.

Protocol: only *train* splits are read (the RouteLLM and Arena prompts by the data README's
hash rule, RouterBench by its own ``*_train.csv`` files, and tierwise's own tier corpus, which
is all training data — the held-out tier prompts live in a separate file that training never
opens). Hyper-parameters are chosen by cross-validation inside the train split. The model card
records the SHA-256 of every file read, the rows used per source and the cross-validation
metrics; test-split numbers come from ``tierwise eval``, never from here.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tierwise.classifiers.learned import (
    ARTIFACT_FORMAT,
    ARTIFACT_VERSION,
    STACK_NAMES,
    encode_array,
    stack_features,
)
from tierwise.evals import datasets as ds
from tierwise.evals.metrics import evaluate_router, tiebreak_key
from tierwise.textfeatures import DENSE_NAMES, featurize

RB_MODELS_ORDER = (
    "claude-instant-v1",
    "claude-v1",
    "claude-v2",
    "gpt-3.5-turbo-1106",
    "gpt-4-1106-preview",
    "meta/llama-2-70b-chat",
    "mistralai/mixtral-8x7b-chat",
    "zero-one-ai/Yi-34B-Chat",
    "WizardLM/WizardLM-13B-V1.2",
    "meta/code-llama-instruct-34b-chat",
    "mistralai/mistral-7b-chat",
)
# The same two models under their RouterBench and Arena names.
RB_WEAK, RB_STRONG = "mistralai/mixtral-8x7b-chat", "gpt-4-1106-preview"
ARENA_WEAK, ARENA_STRONG = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"


def corpus_path() -> Path:
    return Path(str(resources.files("tierwise") / "data" / "tier_corpus.jsonl"))


@dataclass
class Rows:
    """Training rows of one head: texts, labels, optional sample weights and groups."""

    prompts: list[str] = field(default_factory=list)
    systems: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)

    def add(
        self, prompt: str, system: str, label: int, weight: float, source: str, group: str = ""
    ) -> None:
        self.groups.append(group or f"row{len(self.prompts)}")
        self.prompts.append(prompt)
        self.systems.append(system)
        self.labels.append(label)
        self.weights.append(weight)
        self.sources.append(source)


@dataclass
class TrainingData:
    heads: dict[str, Rows]
    files: dict[str, str]  # path → sha256
    counts: dict[str, int]
    routellm_train: dict[str, list[ds.PairItem]]


def _hash_files(paths: Sequence[Path], root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in sorted(paths):
        try:
            name = str(p.relative_to(root))
        except ValueError:
            name = p.name
        out[name] = ds.file_sha256(p)
    return out


def load_training_data(data_dir: Path, corpus: Path | None = None) -> TrainingData:
    data_dir = Path(data_dir)
    corpus = corpus or corpus_path()
    heads: dict[str, Rows] = {"tier": Rows(), "rl:weak": Rows(), "rl:strong": Rows()}
    for m in RB_MODELS_ORDER:
        heads[f"rb:{m}"] = Rows()
    counts: dict[str, int] = {}

    tier_items = ds.load_tier_file(corpus)
    for t in tier_items:
        heads["tier"].add(t.prompt, t.system, t.tier - 1, 1.0, "corpus", t.template)
    counts["tier_corpus"] = len(tier_items)

    routellm: dict[str, list[ds.PairItem]] = {}
    for bench in ("mmlu", "gsm8k"):
        items = ds.load_routellm(data_dir, bench, "train")
        routellm[bench] = items
        counts[f"routellm_{bench}_train"] = len(items)
        for it in items:
            heads["rl:weak"].add(it.prompt, "", int(it.weak), 1.0, bench)
            heads["rl:strong"].add(it.prompt, "", int(it.strong), 1.0, bench)

    rb = ds.load_routerbench(data_dir, "train")
    counts["routerbench_train"] = len(rb)
    for row in rb:
        for m in RB_MODELS_ORDER:
            if m in row.quality:
                heads[f"rb:{m}"].add(row.prompt, "", int(row.quality[m]), 1.0, row.group)
        if RB_WEAK in row.quality and RB_STRONG in row.quality:
            for head, model in (("rl:weak", RB_WEAK), ("rl:strong", RB_STRONG)):
                heads[head].add(row.prompt, "", int(row.quality[model]), 1.0, "routerbench")

    arena = ds.load_arena(data_dir, "train")
    counts["arena_train"] = len(arena)
    for row in arena:
        if ARENA_WEAK not in row.quality or ARENA_STRONG not in row.quality:
            continue
        for head, model in (("rl:weak", ARENA_WEAK), ("rl:strong", ARENA_STRONG)):
            q = (row.quality[model] - 1.0) / 9.0  # judge 1–10 → 0–1, as a soft label
            heads[head].add(row.prompt, "", 1, q, "arena")
            heads[head].add(row.prompt, "", 0, 1.0 - q, "arena")

    routellm_dir = data_dir / "routellm" if (data_dir / "routellm").is_dir() else data_dir
    files = [
        *sorted((routellm_dir / "mmlu" / "responses").glob("mmlu_*.csv")),
        routellm_dir / "mmlu" / "contaminated_prompts.jsonl",
        routellm_dir / "gsm8k" / "gsm8k_responses.csv",
        routellm_dir / "gsm8k" / "contaminated_prompts.jsonl",
        *sorted((data_dir / "routerbench").glob("*_train.csv")),
        data_dir / "arena-bench-v1" / "question.jsonl",
        data_dir / "arena-bench-v1" / "scores.csv",
    ]
    hashes = _hash_files([f for f in files if f.is_file()], data_dir)
    hashes[f"tierwise:{corpus.name}"] = ds.file_sha256(corpus)
    return TrainingData(heads, hashes, counts, routellm)


# -- features -----------------------------------------------------------------------------


@dataclass
class FeatureSpace:
    vocab: list[str]
    index: dict[str, int]
    idf: npt.NDArray[np.float64]
    dense_mean: npt.NDArray[np.float64]
    dense_scale: npt.NDArray[np.float64]


def build_space(
    texts: Sequence[tuple[str, str]], *, min_df: int, max_features: int
) -> FeatureSpace:
    """Vocabulary (the ``max_features`` most frequent keys seen in ≥ ``min_df`` training
    prompts), smoothed idf as scikit-learn computes it, and the dense features' scaling."""
    df: dict[str, int] = {}
    dense = []
    for prompt, system in texts:
        keys, d = featurize(prompt, system)
        dense.append(d)
        for k in keys:
            df[k] = df.get(k, 0) + 1
    kept = sorted((k for k, c in df.items() if c >= min_df), key=lambda k: (-df[k], k))
    kept = sorted(kept[:max_features])
    n = len(texts)
    idf = np.array([math.log((1 + n) / (1 + df[k])) + 1.0 for k in kept])
    arr = np.asarray(dense, dtype=np.float64)
    scale = arr.std(axis=0)
    scale[scale == 0] = 1.0
    return FeatureSpace(kept, {k: i for i, k in enumerate(kept)}, idf, arr.mean(axis=0), scale)


@dataclass
class Design:
    """Design matrices of some rows: text keys (CSR, idf-weighted, L2-normalised), and the
    raw and standardised dense features."""

    sparse: Any
    dense_raw: npt.NDArray[np.float64]
    dense: npt.NDArray[np.float64]

    def full(self) -> Any:
        from scipy import sparse  # type: ignore[import-untyped,unused-ignore]

        return sparse.hstack([self.sparse, sparse.csr_matrix(self.dense)]).tocsr()


def design(space: FeatureSpace, prompts: Sequence[str], systems: Sequence[str]) -> Design:
    from scipy import sparse  # type: ignore[import-untyped,unused-ignore]

    rows, cols, vals = [], [], []
    dense = np.empty((len(prompts), len(DENSE_NAMES)))
    for r, (prompt, system) in enumerate(zip(prompts, systems, strict=True)):
        keys, d = featurize(prompt, system)
        dense[r] = d
        idx = [j for j in map(space.index.get, keys) if j is not None]
        if not idx:
            continue
        weights = space.idf[idx]
        norm = math.sqrt(float((weights**2).sum()))
        rows.extend([r] * len(idx))
        cols.extend(idx)
        vals.extend((weights / norm).tolist())
    x = sparse.csr_matrix((vals, (rows, cols)), shape=(len(prompts), len(space.vocab)))
    return Design(x, dense, (dense - space.dense_mean) / space.dense_scale)


def _fit_lr(x: Any, y: Any, w: Any, c: float) -> Any:
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped,unused-ignore]

    model = LogisticRegression(C=c, max_iter=4000)
    model.fit(x, np.asarray(y), sample_weight=np.asarray(w))
    return model


def _folds(n: int, k: int, seed: int = 0) -> list[npt.NDArray[np.int64]]:
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(order[i::k]) for i in range(k)]


def cv_accuracy(x: Any, rows: Rows, c: float, k: int = 5) -> tuple[float, float]:
    """Grouped k-fold CV (all prompts of one template in one fold): accuracy and log loss."""
    y = np.asarray(rows.labels)
    w = np.asarray(rows.weights)
    names = sorted(set(rows.groups))
    group_fold = {g: i % k for i, g in enumerate(np.random.default_rng(0).permutation(names))}
    fold_of = np.array([group_fold[g] for g in rows.groups])
    correct, loss = 0, 0.0
    for f in range(k):
        held = fold_of == f
        m = _fit_lr(x[~held], y[~held], w[~held], c)
        proba = m.predict_proba(x[held])
        correct += int((proba.argmax(axis=1) == y[held]).sum())
        loss -= float(np.log(np.clip(proba[np.arange(held.sum()), y[held]], 1e-9, 1)).sum())
    return correct / len(y), loss / len(y)


def _stack_matrix(z: npt.NDArray[np.float64], dense_raw: npt.NDArray[np.float64]) -> Any:
    return np.array(
        [
            stack_features(float(a), float(b), list(d))
            for (a, b), d in zip(z, dense_raw, strict=True)
        ]
    )


def _routellm_apgr(
    scores: npt.NDArray[np.float64], rows_w: Rows, rows_s: Rows, idx: npt.NDArray[np.int64]
) -> float:
    keys = [tiebreak_key(rows_w.prompts[i]) for i in idx]
    yw = np.asarray(rows_w.labels)[idx]
    ys = np.asarray(rows_s.labels)[idx]
    return evaluate_router(scores, yw, ys, keys=keys).apgr


# -- the whole build ---------------------------------------------------------------------------

Progress = Callable[[str], None]


@dataclass
class _Heads:
    """The model's output columns as they are trained, one head at a time."""

    n_vocab: int
    columns: list[str] = field(default_factory=list)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    weights: list[npt.NDArray[np.float64]] = field(default_factory=list)
    biases: list[npt.NDArray[np.float64]] = field(default_factory=list)

    def add(
        self, head: str, kind: str, coef: Any, intercept: Any, labels: list[int] | None = None
    ) -> None:
        w = np.asarray(coef, dtype=np.float64).T
        if w.shape[0] == self.n_vocab:  # text-only head: no dense weights
            w = np.vstack([w, np.zeros((len(DENSE_NAMES), w.shape[1]))])
        cols = list(range(len(self.columns), len(self.columns) + w.shape[1]))
        self.groups[head] = {"kind": kind, "columns": cols}
        if labels:
            self.groups[head]["labels"] = labels
        self.columns.extend([f"{head}:{lab}" for lab in labels] if labels else [head])
        self.weights.append(w)
        self.biases.append(np.asarray(intercept, dtype=np.float64))


def _train_tier(
    space: FeatureSpace, tier: Rows, heads: _Heads, c_grid: Sequence[float], folds: int
) -> dict[str, Any]:
    """Softmax over the taxonomy's levels on text + dense features; C by grouped CV."""
    xt = design(space, tier.prompts, tier.systems).full()
    cv = {c: cv_accuracy(xt, tier, c, folds) for c in c_grid}
    best = min(cv, key=lambda c: cv[c][1])  # best held-out-template log loss
    m = _fit_lr(xt, tier.labels, tier.weights, best)
    heads.add("tier", "softmax", m.coef_, m.intercept_, [1, 2, 3])
    return {
        "C": best,
        "grouped_cv": {
            str(c): {"accuracy": round(a, 4), "log_loss": round(ll, 4)} for c, (a, ll) in cv.items()
        },
    }


def _sigmoid(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)


def _train_pair_and_stack(
    space: FeatureSpace,
    weak: Rows,
    strong: Rows,
    heads: _Heads,
    *,
    pair_c: float,
    alphas: Sequence[float],
    folds: int,
    say: Progress,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The reference-pair heads (text only) and the stacked gain head fitted on their
    out-of-fold logits over the RouteLLM rows; returns (stack section, metrics)."""
    from sklearn.linear_model import Ridge  # type: ignore[import-untyped,unused-ignore]

    dr = design(space, weak.prompts, weak.systems)
    yw, ys = np.asarray(weak.labels), np.asarray(strong.labels)
    ww, ws = np.asarray(weak.weights), np.asarray(strong.weights)
    src = np.asarray(weak.sources)
    rl_idx = np.flatnonzero(np.isin(src, ["mmlu", "gsm8k"]))
    fold_of = np.full(len(src), -1)
    for bench in ("mmlu", "gsm8k"):
        idx = np.flatnonzero(src == bench)
        for k, f in enumerate(_folds(len(idx), folds)):
            fold_of[idx[f]] = k
    oof = np.zeros((len(src), 2))
    for k in range(folds):
        say(f"  out-of-fold pair logits, fold {k + 1}/{folds}")
        held = fold_of == k
        for col, (y, w) in enumerate(((yw, ww), (ys, ws))):
            mk = _fit_lr(dr.sparse[~held], y[~held], w[~held], pair_c)
            oof[held, col] = mk.decision_function(dr.sparse[held])
    f_all = _stack_matrix(oof[rl_idx], dr.dense_raw[rl_idx])
    gain = (ys - yw)[rl_idx].astype(np.float64)
    bench_of = src[rl_idx]
    cv_stack: dict[float, dict[str, float]] = {}
    for alpha in alphas:
        scores = np.zeros(len(rl_idx))
        for k in range(folds):
            te = fold_of[rl_idx] == k
            mean, scale = f_all[~te].mean(axis=0), f_all[~te].std(axis=0)
            scale[scale == 0] = 1.0
            r = Ridge(alpha=alpha).fit((f_all[~te] - mean) / scale, gain[~te])
            scores[te] = r.predict((f_all[te] - mean) / scale)
        cv_stack[alpha] = {
            b: _routellm_apgr(scores[bench_of == b], weak, strong, rl_idx[bench_of == b])
            for b in ("mmlu", "gsm8k")
        }
    gap = _sigmoid(oof[:, 1]) - _sigmoid(oof[:, 0])
    base = {
        b: _routellm_apgr(gap[src == b], weak, strong, np.flatnonzero(src == b))
        for b in ("mmlu", "gsm8k")
    }
    alpha = max(cv_stack, key=lambda a: sum(cv_stack[a].values()))
    # Where the stack applies: everywhere, or only to free-form prompts (the pair heads' gap
    # stays the score of multiple-choice prompts) — decided by the same cross-validation.
    applies_to = "free" if base["mmlu"] > cv_stack[alpha]["mmlu"] else "all"
    mean, scale = f_all.mean(axis=0), f_all.std(axis=0)
    scale[scale == 0] = 1.0
    ridge = Ridge(alpha=alpha).fit((f_all - mean) / scale, gain)
    for head, (y, w) in (("rl:weak", (yw, ww)), ("rl:strong", (ys, ws))):
        m = _fit_lr(dr.sparse, y, w, pair_c)
        heads.add(head, "sigmoid", m.coef_, m.intercept_)
    stack = {
        "names": list(STACK_NAMES),
        "mean": [round(float(v), 6) for v in mean],
        "scale": [round(float(v), 6) for v in scale],
        "weights": [round(float(v), 8) for v in ridge.coef_],
        "bias": round(float(ridge.intercept_), 8),
        "applies_to": applies_to,
    }
    metrics = {
        "pair": {"C": pair_c, "cv_apgr_pair_gap": {k: round(v, 4) for k, v in base.items()}},
        "stack": {
            "alpha": alpha,
            "applies_to": applies_to,
            "cv_apgr": {
                str(a): {k: round(v, 4) for k, v in r.items()} for a, r in cv_stack.items()
            },
        },
    }
    return stack, metrics


def train(
    data_dir: Path,
    *,
    corpus: Path | None = None,
    name: str = "router-v1",
    min_df: int = 3,
    max_features: int = 30_000,
    pair_c: float = 0.5,
    tier_c_grid: Sequence[float] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
    stack_alphas: Sequence[float] = (1.0, 10.0, 100.0, 1000.0),
    rb_c: float = 0.5,
    folds: int = 5,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train every head on the train splits and return the artifact (a JSON-able dict)."""
    say: Progress = progress or (lambda _msg: None)
    say("reading the training data")
    data = load_training_data(data_dir, corpus)
    texts: dict[tuple[str, str], None] = {}
    for rows in data.heads.values():
        for p, s in zip(rows.prompts, rows.systems, strict=True):
            texts[(p, s)] = None
    say(f"building the vocabulary over {len(texts)} distinct training prompts")
    space = build_space(list(texts), min_df=min_df, max_features=max_features)
    heads = _Heads(len(space.vocab))
    metrics: dict[str, Any] = {}

    say(f"tier head: {len(data.heads['tier'].labels)} corpus prompts, grouped {folds}-fold CV")
    metrics["tier"] = _train_tier(space, data.heads["tier"], heads, tier_c_grid, folds)

    say(f"reference-pair heads and the stacked gain: {len(data.heads['rl:weak'].labels)} rows")
    stack, pair_metrics = _train_pair_and_stack(
        space,
        data.heads["rl:weak"],
        data.heads["rl:strong"],
        heads,
        pair_c=pair_c,
        alphas=stack_alphas,
        folds=folds,
        say=say,
    )
    metrics.update(pair_metrics)

    say("RouterBench per-model heads")
    for model_name in RB_MODELS_ORDER:
        rows = data.heads[f"rb:{model_name}"]
        m = _fit_lr(
            design(space, rows.prompts, rows.systems).full(), rows.labels, rows.weights, rb_c
        )
        heads.add(f"rb:{model_name}", "sigmoid", m.coef_, m.intercept_)
    metrics["routerbench"] = {"C": rb_c}

    full = np.hstack(heads.weights)
    n_vocab = len(space.vocab)
    sparse_w = full[:n_vocab] * space.idf[:, None]  # idf folded into the weights
    say(f"artifact: {n_vocab} text keys × {len(heads.columns)} outputs")
    return {
        "format": ARTIFACT_FORMAT,
        "format_version": ARTIFACT_VERSION,
        "name": name,
        "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "columns": heads.columns,
        "groups": heads.groups,
        "dense_names": list(DENSE_NAMES),
        "dense_mean": [round(float(v), 6) for v in space.dense_mean],
        "dense_scale": [round(float(v), 6) for v in space.dense_scale],
        "dense_weights": [[round(float(v), 6) for v in row] for row in full[n_vocab:]],
        "bias": [round(float(v), 6) for v in np.concatenate(heads.biases)],
        "vocab": space.vocab,
        "idf2": encode_array((space.idf**2).astype(np.float32)),
        "sparse_weights": encode_array(sparse_w.astype(np.float16)),
        "stack": stack,
        "card": {
            "data_sha256": data.files,
            "rows": data.counts,
            "hyperparameters": {"min_df": min_df, "max_features": max_features, "folds": folds},
            "train_metrics": metrics,
            "protocol": PROTOCOL,
        },
    }


PROTOCOL = (
    "Only train splits were read: RouteLLM MMLU/GSM8K and Arena prompts with "
    "sha256(prompt) % 2 == 0 after removing the contaminated prompts, RouterBench "
    "*_train.csv, and tierwise's tier corpus (the held-out tier prompts are a separate file "
    "that training never opens). The vocabulary, idf and feature scaling come from training "
    "prompts only; C and the stack's ridge alpha were chosen by k-fold cross-validation inside "
    "the train split. Test-split metrics come from `tierwise eval`, never from training."
)


def write_artifact(artifact: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(artifact, separators=(",", ":")) + "\n", encoding="utf-8")
