"""Loaders for the evaluation and training data, and the one split rule used everywhere.

Split rule (from the data README): a prompt is in *test* when
``int(sha256(prompt.encode("utf-8")).hexdigest(), 16) % 2 == 1``, else in *train*.
Contaminated prompts are removed before splitting.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tierwise.errors import InputError

Split = Literal["train", "test", "all"]
ROUTELLM_WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
ROUTELLM_STRONG = "gpt-4-1106-preview"
BENCHMARKS = ("mmlu", "gsm8k", "mt-bench")

# csv fields can be long (prompts with passages)
csv.field_size_limit(1 << 30)


def split_of(prompt: str) -> Literal["train", "test"]:
    return (
        "test" if int(hashlib.sha256(prompt.encode("utf-8")).hexdigest(), 16) % 2 == 1 else "train"
    )


def in_split(prompt: str, split: Split) -> bool:
    return split == "all" or split_of(prompt) == split


def default_data_dir(repo_root: Path | None = None) -> Path | None:
    """``$TIERWISE_DATA_DIR``, else ``../shared/data`` beside the repository, if present."""
    env = os.environ.get("TIERWISE_DATA_DIR")
    if env:
        path = Path(env)
        return path if path.is_dir() else None
    root = repo_root or Path(__file__).resolve().parents[3]
    candidate = root.parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


@dataclass(frozen=True, slots=True)
class PairItem:
    """One prompt of a two-model benchmark: the prompt the router sees and both qualities."""

    prompt: str
    weak: float
    strong: float
    group: str = ""  # MMLU domain, MT-Bench category …


def _truthy(value: str) -> float:
    v = value.strip().lower()
    if v in ("true", "1", "1.0"):
        return 1.0
    if v in ("false", "0", "0.0", ""):
        return 0.0
    raise ValueError(f"not a boolean: {value!r}")


def _read_contaminated(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    found: set[str] = set()
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                found.add(json.loads(line)["eval_prompt"])
    return found


def _pair_rows(path: Path, weak: str, strong: str, group: str) -> Iterator[PairItem]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        for name in ("prompt", weak, strong):
            if name not in fields:
                raise InputError(f"{path}: no column {name!r} (columns: {', '.join(fields)})")
        for row in reader:
            yield PairItem(row["prompt"], _truthy(row[weak]), _truthy(row[strong]), group)


def load_routellm(
    data_dir: Path,
    benchmark: str,
    split: Split = "test",
    *,
    weak: str = ROUTELLM_WEAK,
    strong: str = ROUTELLM_STRONG,
) -> list[PairItem]:
    """A RouteLLM benchmark laid out as in its repository; contaminated prompts removed."""
    data_dir = Path(data_dir)
    if (data_dir / "routellm").is_dir() and not (data_dir / "mmlu").is_dir():
        data_dir = data_dir / "routellm"
    if benchmark == "mmlu":
        files = sorted((data_dir / "mmlu" / "responses").glob("mmlu_*.csv"))
        if not files:
            raise InputError(f"{data_dir}/mmlu/responses: no mmlu_<domain>.csv files")
        bad = _read_contaminated(data_dir / "mmlu" / "contaminated_prompts.jsonl")
        items = [
            item
            for f in files
            for item in _pair_rows(f, weak, strong, f.stem.removeprefix("mmlu_"))
        ]
    elif benchmark == "gsm8k":
        path = data_dir / "gsm8k" / "gsm8k_responses.csv"
        if not path.is_file():
            raise InputError(f"{path}: not found")
        bad = _read_contaminated(data_dir / "gsm8k" / "contaminated_prompts.jsonl")
        items = list(_pair_rows(path, weak, strong, "gsm8k"))
    elif benchmark == "mt-bench":
        return load_mt_bench(data_dir / "mt_bench", split, weak=weak, strong=strong)
    else:
        raise InputError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(BENCHMARKS)}")
    return [i for i in items if i.prompt not in bad and in_split(i.prompt, split)]


def _model_match(wanted: str, available: Iterable[str]) -> str | None:
    names = list(available)
    if wanted in names:
        return wanted
    low = wanted.lower()
    tail = low.rsplit("/", 1)[-1]
    for name in names:
        if name.lower() == low or name.lower().rsplit("/", 1)[-1] == tail:
            return name
    return None


def load_mt_bench(
    mt_dir: Path,
    split: Split = "all",
    *,
    weak: str = ROUTELLM_WEAK,
    strong: str = ROUTELLM_STRONG,
) -> list[PairItem]:
    """MT-Bench: the router sees turn 1; a model's quality is the mean judge score of both turns.

    ``split="all"`` (the default for MT-Bench) evaluates every question.
    """
    qpath, jpath = mt_dir / "question.jsonl", mt_dir / "judgements.jsonl"
    for p in (qpath, jpath):
        if not p.is_file():
            raise InputError(f"{p}: not found")
    questions: dict[str, tuple[str, str]] = {}
    with qpath.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            obj = json.loads(line)
            turns = obj.get("turns") or []
            if not turns or not isinstance(turns[0], str):
                raise InputError(f"{qpath}:{number}: needs a non-empty 'turns' list")
            questions[str(obj["question_id"])] = (turns[0], str(obj.get("category", "")))
    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with jpath.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            obj = json.loads(line)
            score = obj.get("score")
            if score is None or score == -1:
                continue
            scores[str(obj["model"])][str(obj["question_id"])].append(float(score))
    weak_name, strong_name = _model_match(weak, scores), _model_match(strong, scores)
    if weak_name is None or strong_name is None:
        raise InputError(
            f"{jpath}: judgements for {weak!r} and {strong!r} needed; "
            f"models present: {', '.join(sorted(scores))}"
        )
    items: list[PairItem] = []
    for qid, (turn1, category) in questions.items():
        w, s = scores[weak_name].get(qid), scores[strong_name].get(qid)
        if not w or not s or not in_split(turn1, split):
            continue
        items.append(PairItem(turn1, sum(w) / len(w), sum(s) / len(s), category))
    return items


@dataclass(frozen=True, slots=True)
class MultiItem:
    """One prompt with a quality (and optionally a cost) per model."""

    prompt: str
    quality: dict[str, float]
    cost_usd: dict[str, float] = field(default_factory=dict)
    group: str = ""


ROUTERBENCH_TASKS = ("arc_challenge", "mbpp", "winogrande")


def _routerbench_prompt(raw: str) -> str:
    # prompts are stored as a Python-list literal of turns: "['...']"
    text = raw.strip()
    if text.startswith("[") and text.endswith("]"):
        import ast

        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return raw
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return "\n".join(value)
    return raw


def load_routerbench(
    data_dir: Path,
    split: Literal["train", "test"] = "test",
    tasks: Iterable[str] = ROUTERBENCH_TASKS,
) -> list[MultiItem]:
    """RouterBench subsets (their own train/test files); per-model 0/1 quality and real cost.

    A few rows lack some models' correctness (empty cells): those models are absent from that
    row's ``quality``.
    """
    data_dir = Path(data_dir)
    if (data_dir / "routerbench").is_dir():
        data_dir = data_dir / "routerbench"
    items: list[MultiItem] = []
    for task in tasks:
        path = data_dir / f"{task}_{split}.csv"
        if not path.is_file():
            raise InputError(f"{path}: not found")
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = reader.fieldnames or []
            models = [f.split("|")[0] for f in fields if f.endswith("|total_cost")]
            for row in reader:
                items.append(
                    MultiItem(
                        prompt=_routerbench_prompt(row["prompt"]),
                        quality={m: float(row[m]) for m in models if row[m].strip()},
                        cost_usd={m: float(row[f"{m}|total_cost"]) for m in models},
                        group=task,
                    )
                )
    return items


def load_arena(data_dir: Path, split: Split = "all") -> list[MultiItem]:
    """Arena-bench v1: 300 prompts, a 1–10 judge score per model (missing scores skipped)."""
    data_dir = Path(data_dir)
    if (data_dir / "arena-bench-v1").is_dir():
        data_dir = data_dir / "arena-bench-v1"
    prompts: dict[str, str] = {}
    with (data_dir / "question.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                obj = json.loads(line)
                prompts[obj["question_id"]] = obj["turns"][0]
    quality: dict[str, dict[str, float]] = defaultdict(dict)
    with (data_dir / "scores.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["score"].strip():
                quality[row["question_id"]][row["model"]] = float(row["score"])
    return [
        MultiItem(prompt=prompts[q], quality=dict(quality[q]), group="arena")
        for q in prompts
        if q in quality and in_split(prompts[q], split)
    ]


@dataclass(frozen=True, slots=True)
class TierItem:
    prompt: str
    system: str
    tier: int  # 1–3, the lesson's taxonomy
    category: str = ""
    template: str = ""  # which hand-written template produced it (for grouped CV)


def load_tier_file(path: Path) -> list[TierItem]:
    """JSON lines ``{"prompt", "system"?, "tier" (1–3 or haiku/sonnet/opus), "category"?}``."""
    names = {"haiku": 1, "sonnet": 2, "opus": 3}
    items: list[TierItem] = []
    with Path(path).open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
            tier = obj.get("tier")
            tier = names.get(tier, tier) if isinstance(tier, str) else tier
            if tier not in (1, 2, 3) or not isinstance(obj.get("prompt"), str):
                raise InputError(f'{path}:{number}: needs "prompt" and "tier" in 1–3')
            items.append(
                TierItem(
                    obj["prompt"],
                    obj.get("system") or "",
                    int(tier),
                    str(obj.get("category", "")),
                    str(obj.get("template", "")),
                )
            )
    return items


def read_prompts(path: Path) -> list[tuple[str, str]]:
    """(prompt, system) pairs from JSON lines with a ``prompt`` (``system`` optional)."""
    pairs: list[tuple[str, str]] = []
    with Path(path).open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
                raise InputError(f'{path}:{number}: needs a string "prompt"')
            pairs.append((obj["prompt"], obj.get("system") or ""))
    return pairs


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
