"""`tierwise serve` as a user runs it: a subprocess, the official SDKs, only base_url changed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx2 as httpx
import openai
import pytest

from tests.fakes.anthropic_server import FakeAnthropic

TIERWISE = str(Path(sys.executable).parent / "tierwise")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "TIERWISE_"))}
    return {**env, "TIERWISE_HOME": str(home), **extra}


def start_serve(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        [TIERWISE, "serve", "--port", str(port), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(base + "/health", timeout=0.5).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("serve did not start")


@pytest.fixture
def served(fake_anthropic: FakeAnthropic, tmp_path: Path) -> Iterator[str]:
    env = clean_env(
        tmp_path,
        ANTHROPIC_API_KEY=fake_anthropic.api_key,
        ANTHROPIC_BASE_URL=fake_anthropic.base_url,
    )
    proc, base = start_serve(env)
    yield base
    proc.terminate()
    proc.wait(timeout=20)


def test_both_sdks_work_with_only_base_url_changed(served: str) -> None:
    client = anthropic.Anthropic(base_url=served, api_key="anything")
    routed = []
    for prompt, system in [
        ("Format this record as JSON: name Ann, age 31", ""),
        ("Write a Python function that merges two sorted lists.", ""),
        (
            "Review this distributed architecture for race conditions.",
            "You are a principal architect.",
        ),
    ]:
        raw = client.messages.with_raw_response.create(
            model="auto",
            max_tokens=300,
            messages=[{"role": "user", "content": prompt}],
            system=system,
        )
        routed.append((raw.parse().model, raw.headers["x-tierwise-tier"]))
    assert routed == [
        ("claude-haiku-4-5", "haiku"),
        ("claude-sonnet-4-6", "sonnet"),
        ("claude-opus-4-6", "opus"),
    ]
    oa = openai.OpenAI(base_url=served + "/v1", api_key="anything")
    done = oa.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Translate 'hi' to Spanish"}]
    )
    assert done.model == "claude-haiku-4-5"


def test_simulated_upstream_without_a_key(tmp_path: Path) -> None:
    proc, base = start_serve(clean_env(tmp_path))
    try:
        raw = anthropic.Anthropic(base_url=base, api_key="x").messages.with_raw_response.create(
            model="auto",
            max_tokens=100,
            messages=[{"role": "user", "content": "Translate 'hi' to German"}],
        )
        assert raw.headers["x-tierwise-simulated"] == "true"
        assert raw.parse().content[0].text.startswith("[SIMULATED]")  # type: ignore[union-attr]
        with anthropic.Anthropic(base_url=base, api_key="x").messages.stream(
            model="opus", max_tokens=3000, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            final = stream.get_final_message()
        assert [b.type for b in final.content] == ["thinking", "text"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_non_loopback_bind_without_keys_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [TIERWISE, "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "refusing to listen on 0.0.0.0 without gateway keys" in proc.stderr.replace("\n", " ")
