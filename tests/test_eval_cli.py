"""``tierwise eval …``, ``train`` and ``calibrate`` end to end, as a user runs them (subprocess).

The RouteLLM commands run on a tiny synthetic directory laid out like RouteLLM's repository
(tmp_path); the real data in ../shared/data is used when present, kept fast.
"""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tierwise.evals.datasets import default_data_dir, split_of
from tierwise.evals.metrics import evaluate_router, tiebreak_key

TIERWISE = str(Path(sys.executable).parent / "tierwise")
WEAK, STRONG = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
DATA = default_data_dir(Path(__file__).resolve().parents[1])
needs_data = pytest.mark.skipif(
    DATA is None,
    reason="real data not found: set TIERWISE_DATA_DIR or place it at ../shared/data",
)


def run(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "TIERWISE_"))}
    env |= {"TIERWISE_HOME": str(home), "COLUMNS": "150"}
    return subprocess.run(
        [TIERWISE, *args], capture_output=True, text=True, env=env, timeout=240, check=False
    )


def _question(rng: random.Random, i: int) -> str:
    topic = rng.choice(["algebra", "history", "law", "biology", "physics"])
    return (
        f"Question {i} about {topic}: which option is right?\n"
        f"A. {rng.randint(1, 99)}\nB. {rng.randint(1, 99)}\nC. {rng.randint(1, 99)}\n"
        f"D. {rng.randint(1, 99)}\nAnswer:"
    )


def make_routellm_dir(root: Path, n: int = 60) -> dict[str, Any]:
    """mmlu/responses/mmlu_<domain>.csv, gsm8k/gsm8k_responses.csv, mt_bench/*.jsonl."""
    rng = random.Random(7)
    info: dict[str, Any] = {}
    responses = root / "mmlu" / "responses"
    responses.mkdir(parents=True)
    rows_all: list[tuple[str, bool, bool]] = []
    for domain in ("algebra", "history"):
        with (responses / f"mmlu_{domain}.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["prompt", WEAK, STRONG])
            for _ in range(n // 2):
                q = _question(rng, len(rows_all))
                row = (q, rng.random() < 0.6, rng.random() < 0.8)
                rows_all.append(row)
                w.writerow([q, str(row[1]), str(row[2])])
    contaminated = [rows_all[0][0], rows_all[1][0]]
    with (root / "mmlu" / "contaminated_prompts.jsonl").open("w") as fh:
        for p in contaminated:
            fh.write(json.dumps({"train_prompt": "x", "eval_prompt": p}) + "\n")
    info["mmlu_all"] = len(rows_all) - len(contaminated)
    info["mmlu_test"] = sum(
        split_of(p) == "test" for p, _, _ in rows_all if p not in set(contaminated)
    )
    (root / "gsm8k").mkdir()
    with (root / "gsm8k" / "gsm8k_responses.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["prompt", WEAK, STRONG])
        for i in range(n):
            bags, each = rng.randint(2, 9), rng.randint(2, 9)
            q = f"Tom has {i} apples and buys {bags} bags of {each}. How many?"
            w.writerow([q, str(rng.random() < 0.6), str(rng.random() < 0.85)])
    mt = root / "mt_bench"
    mt.mkdir()
    with (mt / "question.jsonl").open("w") as q_fh, (mt / "judgements.jsonl").open("w") as j_fh:
        for qid in range(1, 25):
            turns = [f"Write a short story about a {qid}-legged robot.", "Now make it rhyme."]
            q_fh.write(json.dumps({"question_id": qid, "category": "writing", "turns": turns}))
            q_fh.write("\n")
            for model, base in (("mixtral-8x7b-instruct-v0.1", 6), ("gpt-4-1106-preview", 8)):
                for turn in (1, 2):
                    score = max(1, min(10, base + rng.randint(-3, 2)))
                    judged = {"question_id": qid, "model": model, "score": score, "turn": turn}
                    j_fh.write(json.dumps(judged) + "\n")
    return info


def test_eval_routellm_mmlu_on_a_synthetic_repo(tmp_path: Path) -> None:
    data = tmp_path / "routellm"
    info = make_routellm_dir(data)
    scores_csv, plot = tmp_path / "scores.csv", tmp_path / "mmlu.png"
    proc = run(
        "eval", "routellm", "--benchmark", "mmlu", "--data", str(data), "--split", "all",
        "--json", "--scores", str(scores_csv), "--plot", str(plot), home=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert {"benchmark", "n", "apgr", "cpt50", "cpt80", "random_apgr"} <= set(res)
    assert (res["benchmark"], res["split"], res["n"]) == ("mmlu", "all", info["mmlu_all"])
    assert len(res["points"]) == 11
    assert res["oracle"]["apgr"] > 1.0
    assert res["apgr_ci"][0] <= res["apgr"] <= res["apgr_ci"][1]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # anyone can recompute the metric from the written scores
    with scores_csv.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == info["mmlu_all"]
    truth = {}
    for f in (data / "mmlu" / "responses").glob("*.csv"):
        with f.open(newline="") as fh:
            for r in csv.DictReader(fh):
                truth[r["prompt"]] = (r[WEAK] == "True", r[STRONG] == "True")
    again = evaluate_router(
        [float(r["score"]) for r in rows],
        [truth[r["prompt"]][0] for r in rows],
        [truth[r["prompt"]][1] for r in rows],
        keys=[tiebreak_key(r["prompt"]) for r in rows],
    )
    assert again.apgr == pytest.approx(res["apgr"], abs=1e-4)

    proc = run(
        "eval", "routellm", "-b", "mmlu", "--data", str(data), "--json", home=tmp_path
    )  # default split: test
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["n"] == info["mmlu_test"]


def test_eval_routellm_gsm8k_mt_bench_and_errors(tmp_path: Path) -> None:
    data = tmp_path / "repo"
    make_routellm_dir(data)
    proc = run(
        "eval", "routellm", "-b", "gsm8k", "--data", str(data), "--split", "all",
        "--ties", "drop", "--json", home=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert (res["n"], res["ties"]) == (60, "drop")

    proc = run("eval", "routellm", "-b", "mt-bench", "--data", str(data), "--json", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert (res["benchmark"], res["split"], res["n"]) == ("mt-bench", "all", 24)
    assert 1.0 <= res["weak_quality"] < res["strong_quality"] <= 10.0

    proc = run("eval", "routellm", "-b", "mmlu", "--data", str(data), home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "APGR" in proc.stdout and "random" in proc.stdout and "oracle" in proc.stdout

    proc = run("eval", "routellm", "-b", "hellaswag", "--data", str(data), home=tmp_path)
    assert proc.returncode == 2 and "--benchmark must be one of" in proc.stderr
    proc = run("eval", "routellm", "-b", "mmlu", "--data", str(tmp_path / "nope"), home=tmp_path)
    assert proc.returncode == 2 and "no mmlu_<domain>.csv" in proc.stderr


def make_routerbench_dir(root: Path) -> None:
    rng = random.Random(3)
    models = {
        "claude-instant-v1": (0.6, 0.0004),
        "mistralai/mixtral-8x7b-chat": (0.65, 0.0002),
        "gpt-4-1106-preview": (0.9, 0.005),
    }
    root.mkdir(parents=True)
    for split in ("train", "test"):
        for task in ("arc_challenge", "mbpp", "winogrande"):
            with (root / f"{task}_{split}.csv").open("w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(
                    ["sample_id", "prompt", "eval_name", *models]
                    + [f"{m}|total_cost" for m in models]
                    + ["oracle_model_to_route_to"]
                )
                for i in range(15):
                    prompt = str([f"{task} question {i}: pick the right answer"])
                    w.writerow(
                        [f"{task}.{i}", prompt, task]
                        + [float(rng.random() < acc) for acc, _ in models.values()]
                        + [cost * rng.uniform(0.8, 1.2) for _, cost in models.values()]
                        + ["gpt-4-1106-preview"]
                    )


def test_eval_routerbench_on_synthetic_data(tmp_path: Path) -> None:
    data = tmp_path / "routerbench"
    make_routerbench_dir(data)
    models = "claude-instant-v1,mistralai/mixtral-8x7b-chat,gpt-4-1106-preview"
    plot = tmp_path / "rb.png"
    proc = run(
        "eval", "routerbench", "--data", str(data), "--models", models, "--json",
        "--plot", str(plot), home=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    for key in ("top_model", "top_accuracy", "top_cost_usd", "cost_fraction_at_top_accuracy"):
        assert key in res
    assert res["n"] == 45 and len(res["points"]) == 201
    assert res["models"][-1] == "gpt-4-1106-preview"  # ordered by expected (train) cost
    assert res["oracle"]["accuracy"] >= res["top_accuracy"]
    # per-model heads fitted on the train files at evaluation, their penalty chosen by CV there
    assert set(res["head_l2"]) == set(models.split(","))
    ci = res["cost_fraction_interval"]
    assert ci is None or 0 <= ci[0] <= ci[1]
    assert plot.is_file()
    proc = run("eval", "routerbench", "--data", str(data), "--models", "nope,gpt-4-1106-preview",
               home=tmp_path)  # fmt: skip
    assert proc.returncode == 2 and "no RouterBench train data for nope" in proc.stderr


def test_eval_tiers_on_a_labelled_file(tmp_path: Path) -> None:
    labelled = tmp_path / "tiers.jsonl"
    rows = [
        {"prompt": "Translate 'thank you' into Spanish.", "tier": 1},
        {"prompt": "Write a Python function that reverses a linked list.", "tier": "sonnet"},
        {
            "prompt": "Review this architecture for race conditions.",
            "system": "You are a principal architect.",
            "tier": 3,
        },
    ]
    labelled.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    proc = run("eval", "tiers", "--input", str(labelled), "--json", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert (res["n"], res["accuracy"], res["severe_errors"]) == (3, 1.0, 0)
    assert res["confusion"]["opus"]["opus"] == 1
    proc = run("eval", "tiers", home=tmp_path)  # tierwise's own held-out prompts
    assert proc.returncode == 0, proc.stderr
    assert "severe errors 0" in proc.stdout


def test_eval_latency_reports_percentiles(tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        "\n".join(json.dumps({"prompt": f"Summarize item {i} " * (i % 7 + 1)}) for i in range(50))
    )
    proc = run("eval", "latency", "--prompts", str(prompts), "--repeat", "1", "--json",
               home=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["samples"] == 50 and res["classifier"] == "learned"
    assert 0 < res["p50_ms"] <= res["p99_ms"] <= res["max_ms"]  # no timing thresholds here


def test_calibrate_writes_the_knob(tmp_path: Path) -> None:
    sample = tmp_path / "sample.jsonl"
    prompts = [
        "Translate 'hello' into German.",
        "Convert this CSV row to JSON: a,b,c",
        "Write a Python function that parses a date.",
        "Fix this TypeError in my script.",
        "Design a fault-tolerant distributed architecture for payments.",
        "Audit this login flow for security vulnerabilities.",
        "qwxz",
    ] * 3
    sample.write_text("\n".join(json.dumps({"prompt": p}) for p in prompts) + "\n")
    config = tmp_path / "config.toml"
    config.write_text('default_tier = "sonnet"\n\n[classifier]\nkind = "learned"\n')
    proc = run("calibrate", "--target", "30% top", "--prompts", str(sample),
               "--write", str(config), "--json", home=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["tier_shares"]["opus"] <= 0.30
    assert abs(sum(res["tier_shares"].values()) - 1.0) < 1e-6
    assert res["not_decided_by_knob"] >= 3  # "qwxz": no known word, abstained → default tier
    written = tomllib.loads(config.read_text())
    assert written["classifier"] == {
        "kind": "learned",
        "quality_tolerance": pytest.approx(res["quality_tolerance"], abs=1e-3),
    }
    assert written["default_tier"] == "sonnet"

    proc = run("calibrate", "--target", "99% quality", "--prompts", str(sample),
               "--write", str(config), "--json", home=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    strict = json.loads(proc.stdout)
    assert strict["quality_kept"] >= 0.99
    assert abs(sum(strict["tier_shares"].values()) - 1.0) < 1e-6
    assert tomllib.loads(config.read_text())["classifier"]["quality_tolerance"] == pytest.approx(
        strict["quality_tolerance"], abs=1e-3
    )

    fresh = tmp_path / "new" / "c.toml"
    proc = run("calibrate", "--target", "50% quality", "--prompts", str(sample),
               "--write", str(fresh), home=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "quality_tolerance" in tomllib.loads(fresh.read_text())["classifier"]
    assert "calibrated" in proc.stdout

    proc = run("calibrate", "--target", "lots", "--prompts", str(sample), home=tmp_path)
    assert proc.returncode == 2 and "N% top" in proc.stderr


def test_write_knob_keeps_the_rest_of_the_file(tmp_path: Path) -> None:
    from tierwise.evals.calibrate import parse_target, write_knob

    cfg = tmp_path / "c.toml"
    cfg.write_text('# mine\ndefault_tier = "haiku"\n[provider]\nkind = "simulated"\n')
    write_knob(cfg, 0.25)
    write_knob(cfg, 0.3)
    data = tomllib.loads(cfg.read_text())
    assert data == {
        "default_tier": "haiku",
        "provider": {"kind": "simulated"},
        "classifier": {"quality_tolerance": 0.3},
    }
    assert cfg.read_text().startswith("# mine\n")
    assert str(parse_target("30 % TOP")) == "30% top"
    assert parse_target("95% quality").value == pytest.approx(0.95)


# -- the real data, when present (kept fast) ---------------------------------------------------


@needs_data
def test_real_gsm8k_test_split(tmp_path: Path) -> None:
    assert DATA is not None
    proc = run("eval", "routellm", "-b", "gsm8k", "--data", str(DATA / "routellm"), "--json",
               home=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["n"] == 656  # 1,319 − 12 contaminated, test half by the sha256 rule
    assert res["apgr"] > res["random_apgr"] + 0.05
    assert abs(res["random_apgr"] - 0.5) < 0.05


@needs_data
def test_real_arena_test_split(tmp_path: Path) -> None:
    assert DATA is not None
    proc = run("eval", "arena", "--data", str(DATA), "--json", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["n"] > 100 and res["weak_quality"] < res["strong_quality"]


def make_arena_dir(root: Path, n: int = 40) -> None:
    rng = random.Random(11)
    root.mkdir(parents=True)
    models = {WEAK: 6, STRONG: 8, "gpt-4-0314": 8, "claude-1": 6, "gpt-3.5-turbo": 6}
    with (root / "question.jsonl").open("w") as q, (root / "scores.csv").open("w") as s:
        s.write("question_id,model,score\n")
        for i in range(n):
            kind = rng.choice(["Prove that", "Write a poem about", "Solve for x:"])
            q.write(json.dumps({"question_id": f"q{i}", "turns": [f"{kind} item {i}"]}) + "\n")
            for model, base in models.items():
                s.write(f"q{i},{model},{max(1, min(10, base + rng.randint(-3, 2)))}\n")


def test_train_rebuilds_a_prior_with_progress_and_a_card(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_routellm_dir(data / "routellm", n=80)
    make_routerbench_dir(data / "routerbench")
    make_arena_dir(data / "arena-bench-v1")
    from tierwise.evals.train import corpus_path

    corpus = tmp_path / "corpus.jsonl"  # a small tier corpus keeps the test fast
    corpus.write_text("".join(corpus_path().read_text().splitlines(keepends=True)[::6]))
    out = tmp_path / "prior.json"
    proc = run("train", "--data", str(data), "--output", str(out), "--no-eval", "--json",
               "--corpus", str(corpus), home=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["artifact"] == str(out) and res["results"] == {}
    for stage in ("reading the data", "featurising prompts", "tier head", "gain heads"):
        assert stage in proc.stderr  # progress per stage, on stderr only
    from tierwise.classifiers.learned import LearnedClassifier, RouterModel
    from tierwise.types import ClassifyInput

    model = RouterModel.load(out)
    card = json.loads(out.read_text())["card"]
    assert card["sources"]["routerbench"]["rows_used"] == 0  # no licence: never trains it
    assert card["sources"]["mmlu"]["rows_used"] > 0
    assert (tmp_path / "prior.md").read_text().count("| no |") == 1
    c = LearnedClassifier(model=model).classify_now(ClassifyInput("Prove that item 3 holds"))
    assert c.tier_quality is not None and c.router_model == model.tag

    # a prior file is loaded by setting too
    from tierwise.classifiers.learned import LearnedClassifier as LC
    from tierwise.config import load

    settings = load(environ={"TIERWISE_HOME": str(tmp_path), "TIERWISE_MODEL": str(out)})
    assert LC.from_settings(settings).model.tag == model.tag

    bad = run("train", home=tmp_path)
    assert bad.returncode == 2 and "exactly one of --data DIR" in bad.stderr
