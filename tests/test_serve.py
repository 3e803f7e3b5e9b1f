"""`tierwise serve` as a user runs it: a subprocess, the official SDKs, only base_url changed."""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
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


# -- start-up: everything is checked before the port is bound -------------------------------
def serve_fails(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TIERWISE, "serve", *args],
        env=clean_env(tmp_path, COLUMNS="80", **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def closed_url(scheme: str) -> str:
    return f"{scheme}://127.0.0.1:{free_port()}/" + ("0" if scheme == "redis" else "test")


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        (["--port", "99999"], {}, ["--port", "65535"]),
        (["--port", "0"], {}, ["--port"]),
        (["--workers", "0"], {}, ["--workers"]),
        (["--log-level", "loud"], {}, ["--log-level", "'loud'"]),
        (["--host", "999.1.1.1"], {}, ["--host", "'999.1.1.1'", "resolve"]),
        (["--host", "192.0.2.1"], {}, ["--host", "not an address of this machine"]),
        (["--config", "{config}"], {}, ["gateway.fallback_chain.opus", "'sonet'"]),
        ([], {"TIERWISE_BASELINE": "gpt-4"}, ["baseline", "$TIERWISE_BASELINE", "no price"]),
        ([], {"TIERWISE_REDIS_URL": "notaurl"}, ["$TIERWISE_REDIS_URL", "not a Redis URL"]),
        ([], {"TIERWISE_REDIS_URL": "{redis}"}, ["$TIERWISE_REDIS_URL", "does not answer"]),
        ([], {"TIERWISE_DB": "{postgres}"}, ["$TIERWISE_DB", "PostgreSQL", "does not answer"]),
    ],
)
def test_bad_settings_stop_serve_before_it_binds(
    tmp_path: Path, args: list[str], env: dict[str, str], names: list[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[gateway]\nfallback_chain = { opus = ["sonet"] }\n')
    fill = {
        "config": str(config),
        "redis": closed_url("redis"),
        "postgres": closed_url("postgresql"),
    }
    port = str(free_port())
    proc = serve_fails(
        tmp_path,
        *(a.format(**fill) for a in args),
        *([] if "--port" in args else ["--port", port]),
        **{k: v.format(**fill) for k, v in env.items()},
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for name in names:
        assert name in lines[0]
    assert "gateway on" not in proc.stderr and proc.stdout == ""


def test_port_in_use_is_an_error_before_any_banner(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = serve_fails(tmp_path, "--port", str(port))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: gateway.port {port} (--port): 127.0.0.1:{port} is already in use; stop what "
        "listens there or choose another --port"
    )


def read_until_banner(proc: subprocess.Popen[str], timeout_s: float = 60) -> list[str]:
    """stderr lines up to and including the banner (a reader thread: never blocks the test
    past the deadline)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def reader() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=reader, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if line.startswith("tierwise gateway on "):
            return seen
    proc.kill()
    raise AssertionError(f"no banner: {''.join(seen)}")


@pytest.mark.parametrize("workers", [1, 2])
def test_banner_means_the_gateway_answers(tmp_path: Path, workers: int) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [TIERWISE, "serve", "--port", str(port), "--workers", str(workers)],
        env=clean_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen = read_until_banner(proc)
        assert seen[-1].startswith(f"tierwise gateway on http://127.0.0.1:{port}  (SIMULATED")
        # no retry: once the banner is out, the gateway answers
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
    finally:
        proc.terminate()
        _, rest = proc.communicate(timeout=30)
    assert "tierwise gateway on" not in rest  # printed once, also with several workers
