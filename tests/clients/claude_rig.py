"""The Claude Code CLI against a real ``tierwise serve``: the gateway subprocess in front of the
project's fake upstream (answering per request, see scripted_upstream.py), a recorder between the
CLI and the gateway, and a proxy sink that catches any attempt of the CLI to reach the internet.

Used by tests/clients/conftest.py (the ``claude_code`` fixture) and by
``python -m tests.clients.record_claude_code`` (which saves real request envelopes)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.clients.recorder import Exchange, HttpRecorder, ProxySink
from tests.clients.scripted_upstream import ScriptedUpstream
from tests.test_serve import TIERWISE, clean_env, free_port
from tierwise.config import Settings, load
from tierwise.keys import KeyStore
from tierwise.ledger import open_store
from tierwise.types import LedgerEntry

ROOT = Path(__file__).resolve().parents[2]
# Where .ci/install-claude-code (run by `make test` and .ci/run) puts the pinned CLI.
PINNED_CLAUDE = ROOT / ".ci" / "claude-code" / "node_modules" / ".bin" / "claude"
CLAUDE_TIMEOUT_S = 120
KEY_NAME = "claude-code"


def claude_or_skip() -> Path:
    """The Claude Code CLI: $TIERWISE_CLAUDE_BIN, the pinned install, or `claude` on PATH.
    Missing, the test skips with the reason; under CI=true it fails instead."""
    configured = os.environ.get("TIERWISE_CLAUDE_BIN")
    candidates = [Path(configured)] if configured else [PINNED_CLAUDE]
    on_path = shutil.which("claude")
    if not configured and on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    reason = (
        f"the Claude Code CLI is not installed (looked for {', '.join(map(str, candidates))}"
        f"{'' if on_path or configured else ' and `claude` on PATH'}); "
        "`make clients` installs it with npm"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the Claude Code tests: {reason}")
    pytest.skip(reason)


@dataclass
class ClaudeRun:
    """One `claude -p` run: its exit code, parsed JSON result, stderr and HTTP exchanges."""

    returncode: int
    output: dict[str, Any]
    stdout: str
    stderr: str
    exchanges: list[Exchange]

    @property
    def messages(self) -> list[Exchange]:
        return [e for e in self.exchanges if e.method == "POST" and e.path == "/v1/messages"]


@dataclass
class ClaudeCodeRig:
    """The CLI, the gateway subprocess, the upstream, the recorder and the proxy sink."""

    claude: Path
    upstream: ScriptedUpstream
    recorder: HttpRecorder
    sink: ProxySink
    gateway_home: Path
    gateway_key: str
    gateway_log: Path
    home: Path  # the CLI's $HOME (its ~/.claude lives there)
    workdir: Path  # the CLI's working directory
    proc: subprocess.Popen[str]
    runs: list[ClaudeRun] = field(default_factory=list)

    def env(
        self, *, auth: str = "api-key", model: str = "auto", offline: bool = True
    ) -> dict[str, str]:
        """A clean environment: nothing inherited but PATH, the gateway as the API, and every
        switch that keeps Claude Code offline and non-interactive."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "ANTHROPIC_BASE_URL": self.recorder.base_url,
            "ANTHROPIC_MODEL": model,
            # Should it try to reach anything but the gateway, the only proxy it knows records
            # the attempt and refuses it.
            "HTTPS_PROXY": self.sink.url,
            "HTTP_PROXY": self.sink.url,
            "https_proxy": self.sink.url,
            "http_proxy": self.sink.url,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        if offline:  # no telemetry, error reports, auto-update, title requests or calls home
            env |= {
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                "DISABLE_TELEMETRY": "1",
                "DISABLE_ERROR_REPORTING": "1",
                "DISABLE_AUTOUPDATER": "1",
            }
        if auth == "api-key":
            env["ANTHROPIC_API_KEY"] = self.gateway_key  # sent as x-api-key
        else:
            env["ANTHROPIC_AUTH_TOKEN"] = self.gateway_key  # sent as Authorization: Bearer
        return env

    def run(
        self,
        prompt: str,
        *args: str,
        auth: str = "api-key",
        offline: bool = True,
        check: bool = True,
    ) -> ClaudeRun:
        """`claude -p PROMPT --output-format json ARGS...` in the work dir; the JSON result
        (``check``: that the CLI succeeded)."""
        before = len(self.recorder.exchanges)
        proc = subprocess.run(
            [str(self.claude), "-p", prompt, "--output-format", "json", *args],
            env=self.env(auth=auth, offline=offline),
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLAUDE_TIMEOUT_S,
            check=False,
        )
        exchanges = self.recorder.wait_answered()[before:]
        try:
            output = json.loads(proc.stdout)
        except ValueError:
            output = {}
        run = ClaudeRun(proc.returncode, output, proc.stdout, proc.stderr, exchanges)
        assert not check or (proc.returncode == 0 and isinstance(output, dict) and output), (
            f"claude exited {proc.returncode}\nstdout: {proc.stdout[-3000:]}\n"
            f"stderr: {proc.stderr[-3000:]}\n"
            f"gateway answers: {[(e.method, e.target, e.status) for e in exchanges]}\n"
            f"gateway log: {self.gateway_log.read_text()[-3000:]}"
        )
        self.runs.append(run)
        return run

    def stop_gateway(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: the gateway drains its ledger queue, then exits
            self.proc.wait(timeout=30)

    def ledger(self) -> list[LedgerEntry]:
        """Every ledger row, oldest first (stops the gateway first, so all are written)."""
        self.stop_gateway()
        store = open_store(self.settings())
        try:
            return store.entries()
        finally:
            store.close()

    def settings(self) -> Settings:
        return load(environ={"TIERWISE_HOME": str(self.gateway_home)})


def start_gateway(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[str], str]:
    """`tierwise serve` on a free port, its output to ``log`` (never an unread pipe)."""
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [TIERWISE, "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tierwise serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(base + "/health", timeout=0.5).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=10)
    raise RuntimeError(f"tierwise serve did not start: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def open_rig(claude: Path, tmp_path: Path) -> Iterator[ClaudeCodeRig]:
    """Claude Code CLI -> recorder -> `tierwise serve` (with one gateway key) -> scripted fake
    upstream. Callers set ``rig.upstream.respond`` before ``rig.run(...)``."""
    gateway_home = tmp_path / "tierwise"
    gateway_home.mkdir(parents=True)
    store = KeyStore(load(environ={"TIERWISE_HOME": str(gateway_home)}))
    try:
        key, _info = store.create(KEY_NAME)
    finally:
        store.close()
    home = tmp_path / "home"
    workdir = tmp_path / "work"
    home.mkdir()
    workdir.mkdir()
    with ScriptedUpstream() as upstream, ProxySink() as sink:
        env = clean_env(
            gateway_home,
            ANTHROPIC_API_KEY=upstream.api_key,
            ANTHROPIC_BASE_URL=upstream.base_url,
        )
        proc, base = start_gateway(env, tmp_path / "gateway.log")
        try:
            port = int(base.rsplit(":", 1)[1])
            with HttpRecorder("127.0.0.1", port) as recorder:
                yield ClaudeCodeRig(
                    claude,
                    upstream,
                    recorder,
                    sink,
                    gateway_home,
                    key,
                    tmp_path / "gateway.log",
                    home,
                    workdir,
                    proc,
                )
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
