"""``tierwise replay`` and ``tierwise code``, run as a user runs them (subprocesses)."""

from __future__ import annotations

import gzip
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import RunningGateway
from tests.sessions_corpus import generate

TIERWISE = str(Path(sys.executable).parent / "tierwise")


def run(
    *args: str, home: Path, extra_env: dict[str, str] | None = None, path: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "TIERWISE_"))}
    env |= {"TIERWISE_HOME": str(home), "COLUMNS": "120", **(extra_env or {})}
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [TIERWISE, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


@pytest.fixture
def small_trace(tmp_path: Path) -> Path:
    path = tmp_path / "trace.jsonl.gz"
    path.write_bytes(gzip.compress(generate(sessions=6)))
    return path


def test_replay_prints_the_three_way_table(tmp_path: Path, small_trace: Path) -> None:
    proc = run("replay", str(small_trace), home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "replay of 6 sessions" in out
    for label in ("all opus", "per-request", "session"):
        assert label in out
    assert "session routing cost no more than per-request routing on" in out
    assert "session rules: " in out


def test_replay_json(tmp_path: Path, small_trace: Path) -> None:
    proc = run("replay", str(small_trace), "--json", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["sessions"] == 6
    policies = {p["policy"]: p for p in data["policies"]}
    assert set(policies) == {"top", "envelope", "per-request", "session"}
    assert policies["top"]["vs_top"] == 1.0
    assert policies["session"]["unexplained_continuation_changes"] == 0
    assert policies["session"]["rules"]["utility"] == 6


def test_replay_under_a_candidate_configuration(tmp_path: Path, small_trace: Path) -> None:
    cfg = tmp_path / "candidate.toml"
    cfg.write_text(
        'default_tier = "sonnet"\n'
        '[[tiers]]\nname = "haiku"\nmodel = "claude-haiku-4-5"\n'
        '[[tiers]]\nname = "sonnet"\nmodel = "claude-sonnet-4-6"\n'
    )
    proc = run("replay", str(small_trace), "--json", "--config", str(cfg), home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    top = json.loads(proc.stdout)["policies"][0]
    assert top["tier_share"] == {"sonnet": 1.0}


def test_replay_errors(tmp_path: Path) -> None:
    proc = run("replay", home=tmp_path)
    assert proc.returncode == 2
    assert "give either a FILE or --from-ledger" in proc.stderr
    proc = run("replay", "--from-ledger", "--since", "all", home=tmp_path)
    assert proc.returncode == 2
    assert "no requests to replay" in proc.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    proc = run("replay", str(bad), home=tmp_path)
    assert proc.returncode == 2
    assert "bad.jsonl:1: not valid JSON" in proc.stderr


# -- tierwise code ----------------------------------------------------------------------------
FAKE_CLAUDE = """#!{python}
import json, os, sys
record = {{"argv": sys.argv[1:], "env": {{k: v for k, v in os.environ.items()
                                         if k.startswith("ANTHROPIC_")}}}}
open({out!r}, "w").write(json.dumps(record))
sys.exit(3)
"""


def fake_claude(tmp_path: Path) -> tuple[Path, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    out = tmp_path / "claude-ran.json"
    script = bin_dir / "claude"
    script.write_text(FAKE_CLAUDE.format(python=sys.executable, out=str(out)))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bin_dir, out


def test_code_says_clearly_when_claude_code_is_not_installed(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run("code", "--no-check", "-p", "hi", home=tmp_path, path=str(empty))
    assert proc.returncode == 127
    assert "Claude Code is not installed" in proc.stderr
    assert "npm install -g @anthropic-ai/claude-code" in proc.stderr


def test_code_starts_claude_against_the_gateway(tmp_path: Path, gateway: RunningGateway) -> None:
    bin_dir, out = fake_claude(tmp_path)
    proc = run(
        "code",
        "--url",
        gateway.base_url,
        "-p",
        "What is the capital of France?",
        "--verbose",
        home=tmp_path,
        path=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        extra_env={"ANTHROPIC_AUTH_TOKEN": "should-not-reach-claude", "TIERWISE_KEY": "tw-key"},
    )
    assert proc.returncode == 3, proc.stderr  # claude's own exit status
    assert f"starting Claude Code against {gateway.base_url}" in proc.stderr
    ran = json.loads(out.read_text())
    assert ran["argv"] == ["-p", "What is the capital of France?", "--verbose"]
    env = ran["env"]
    assert env["ANTHROPIC_BASE_URL"] == gateway.base_url
    assert env["ANTHROPIC_MODEL"] == "auto"
    assert env["ANTHROPIC_API_KEY"] == "tw-key"
    assert env["ANTHROPIC_DEFAULT_HAIKU_MODEL"] == "haiku"
    assert "ANTHROPIC_AUTH_TOKEN" not in env


def test_code_checks_that_a_gateway_answers(tmp_path: Path) -> None:
    bin_dir, out = fake_claude(tmp_path)
    proc = run(
        "code",
        "--url",
        "http://127.0.0.1:9",
        "-p",
        "hi",
        home=tmp_path,
        path=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    )
    assert proc.returncode == 2
    assert "no tierwise gateway answers at http://127.0.0.1:9" in proc.stderr
    assert "tierwise serve" in proc.stderr
    assert not out.exists()


def test_real_claude_code_through_the_gateway(tmp_path: Path, gateway: RunningGateway) -> None:
    from tests.clients.claude_rig import claude_or_skip

    claude = os.environ.get("TIERWISE_TEST_CLAUDE") or str(claude_or_skip())
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        [
            TIERWISE,
            "code",
            "--url",
            gateway.base_url,
            "--claude",
            claude,
            "-p",
            "What is the capital of France?",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=work,
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "TIERWISE_HOME": str(tmp_path / "tw"),
            "DISABLE_TELEMETRY": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
        },
    )
    assert proc.returncode == 0, proc.stderr
    assert "Fake reply from" in proc.stdout
    entries = gateway.wait_for_entries(1)
    routed = [e for e in entries if e.requested_model == "auto" and e.status == "ok"]
    assert routed, [(e.requested_model, e.status, e.error_type) for e in entries]
    upstream = gateway.fake.requests_to("/v1/messages")
    assert upstream
    sent = upstream[0].json_body
    assert isinstance(sent, dict)
    assert sent["metadata"]["user_id"].startswith("{")  # Claude Code's own metadata


def test_replay_by_labels_routes_each_turn_to_its_label(tmp_path: Path, small_trace: Path) -> None:
    """--labels: perfect classification (every generated turn's own tier), the yardstick the
    classifier's routing is compared with in EVALUATION.md."""
    classified = json.loads(run("replay", str(small_trace), "--json", home=tmp_path).stdout)
    proc = run("replay", str(small_trace), "--json", "--labels", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    session = next(p for p in data["policies"] if p["policy"] == "session")
    assert session["below_label"] == 0  # nothing served below the tier its task needs
    assert (
        session["cost_usd"]
        != next(p for p in classified["policies"] if p["policy"] == "session")["cost_usd"]
    )
