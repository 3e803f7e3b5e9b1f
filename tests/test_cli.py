"""The installed ``tierwise`` command, run as a user runs it (a subprocess, no network)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TIERWISE = str(Path(sys.executable).parent / "tierwise")


def run(
    *args: str, home: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "TIERWISE_"))}
    env |= {"TIERWISE_HOME": str(home), "COLUMNS": "120", **(extra_env or {})}
    return subprocess.run(
        [TIERWISE, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_demo_prints_four_decisions_and_the_report(tmp_path: Path) -> None:
    # A key in the environment must not make the demo go online.
    proc = run(
        "demo",
        home=tmp_path,
        extra_env={
            "ANTHROPIC_API_KEY": "sk-ant-should-not-be-used",
            "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
        },
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    blocks = out.split("\n1. ")[1]
    tiers = [line.split()[1] for line in blocks.splitlines() if line.strip().startswith("tier ")]
    assert tiers == ["haiku", "sonnet", "opus", "opus"]
    assert "Manual override" in out
    assert "SIMULATED" in out
    for line in ("Total requests: 4", "Distribution:", "Total cost:", "If all Opus:", "Saved:"):
        assert line in out
    assert "sk-ant-should-not-be-used" not in out + proc.stderr


def test_route_dry_run_json_single_prompt(tmp_path: Path) -> None:
    proc = run("route", "--dry-run", "--json", "Translate 'cat' into German.", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    assert row == {
        "tier": "haiku",
        "model": "claude-haiku-4-5",
        "confidence": row["confidence"],
        "classifier": "learned",
        "reason": row["reason"],
    }
    assert "translation" in row["reason"]


def test_route_dry_run_json_input_file(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    lines = [
        {"id": "a", "prompt": "Extract the dates from: met on 3 May, left 9 June."},
        {"id": 2, "prompt": "Write a Python function that parses ISO dates.", "system": None},
        {
            "id": "c",
            "prompt": "Review this for race conditions.",
            "system": "You are a principal architect.",
        },
        {"id": "d", "prompt": "hmm"},
    ]
    prompts.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    proc = run("route", "--dry-run", "--json", "--input", str(prompts), home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [r["id"] for r in rows] == ["a", 2, "c", "d"]
    assert [r["tier"] for r in rows] == ["haiku", "sonnet", "opus", "sonnet"]
    for r in rows:
        assert set(r) == {"id", "tier", "model", "confidence", "classifier", "reason"}
    assert rows[3]["reason"].startswith("Low confidence")


def test_route_forced_tier_and_real_call_on_simulator(tmp_path: Path) -> None:
    proc = run("route", "--json", "--tier", "opus", "Say hi", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    assert (row["tier"], row["reason"], row["simulated"]) == ("opus", "Manual override", True)
    assert row["text"].startswith("[SIMULATED]")
    assert row["cost_usd"] == row["baseline_cost_usd"]


@pytest.mark.parametrize(
    ("content", "where", "message"),
    [
        ('{"id": 1, "prompt": "ok"}\n{"id": 2, "prompt": ', ":2:", "not valid JSON"),
        ('{"id": 1, "prompt": "ok"}\n\n["a"]\n', ":3:", "expected a JSON object"),
        ('{"prompt": "ok"}\n', ":1:", 'missing "id"'),
        ('{"id": 1, "prompt": 5}\n', ":1:", '"prompt" must be a string'),
        ('{"id": 1, "prompt": "x", "system": 3}\n', ":1:", '"system" must be a string'),
        ('{"id": 1, "prompt": "x"}\n{"id": 1, "prompt": "y"}\n', ":2:", "duplicate id 1"),
    ],
)
def test_bad_input_file_names_file_and_line(
    tmp_path: Path, content: str, where: str, message: str
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    proc = run("route", "--dry-run", "--json", "--input", str(bad), home=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""  # nothing half-written
    assert f"{bad}{where}" in proc.stderr.replace("\n", "")
    assert message in proc.stderr.replace("\n", "")


def test_invalid_utf8_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bin.jsonl"
    bad.write_bytes(b'{"id": 1, "prompt": "ok"}\n{"id": 2, "prompt": "\xff"}\n')
    proc = run("route", "--dry-run", "--json", "--input", str(bad), home=tmp_path)
    assert proc.returncode == 2
    assert f"{bad}:2: not valid UTF-8" in proc.stderr.replace("\n", "")
    proc = run("route", "--dry-run", "--input", str(tmp_path / "none.jsonl"), home=tmp_path)
    assert proc.returncode == 2
    assert "cannot read" in proc.stderr


def test_bad_config_exits_2_with_the_field(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("confidence_threshold = 7\n")
    proc = run("route", "--dry-run", "hi", "--config", str(cfg), home=tmp_path)
    assert proc.returncode == 2
    assert "confidence_threshold" in proc.stderr


def test_prices_command(tmp_path: Path) -> None:
    proc = run("prices", "--json", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    haiku = next(m for m in data["models"] if m["model"] == "claude-haiku-4-5")
    assert (haiku["input"], haiku["output"], haiku["cache_read"]) == ("1", "5", "0.10")
