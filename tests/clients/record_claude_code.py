"""Record what the Claude Code CLI really sends, as fixture envelopes in tests/data/claude_code/.

    .venv/bin/python -m tests.clients.record_claude_code                # the pinned CLI
    .venv/bin/python -m tests.clients.record_claude_code --claude PATH --with-nonessential-traffic

Runs the CLI through the same rig as tests/clients/test_claude_code.py (recorder -> tierwise
serve -> fake upstream), a plain prompt and a Bash tool loop, and writes every request it sent
to the gateway as ``<version>/<nn>-<scenario>-<kind>.json``: method, target, headers and the
parsed body, plus the gateway's status and ``x-tierwise-*`` headers. Secrets are removed: the
gateway key (``x-api-key`` / ``authorization``) becomes ``<redacted>``; the temporary paths
become ``/tmp/claude-code/...``. ``--with-nonessential-traffic`` leaves the CLI's non-essential
requests on (the session-title request); its calls home still go nowhere (the proxy sink).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.clients.claude_rig import PINNED_CLAUDE, ClaudeRun, open_rig
from tests.clients.scripted_upstream import request_kind
from tests.clients.test_claude_code import answer_plainly, shout_the_notes

OUT = Path(__file__).resolve().parents[1] / "data" / "claude_code"
SECRET_HEADERS = ("x-api-key", "authorization")


def envelope(
    exchange: Any, scenario: str, version: str, offline: bool, tmp: Path
) -> dict[str, Any]:
    def scrub(text: str) -> str:
        text = text.replace(str(tmp), "/tmp/claude-code")
        mangled = re.sub(r"[^A-Za-z0-9]", "-", str(tmp))  # ~/.claude/projects/<cwd, mangled>
        text = text.replace(mangled, "-tmp-claude-code")
        return re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:8787", text)

    headers = [
        [name, "<redacted>" if name in SECRET_HEADERS else scrub(value)]
        for name, value in exchange.headers
    ]
    body = json.loads(scrub(exchange.body.decode())) if exchange.body else None
    return {
        "client": "@anthropic-ai/claude-code",
        "version": version,
        "scenario": scenario,
        "kind": request_kind(body) if isinstance(body, dict) else "probe",
        "nonessential_traffic": not offline,
        "request": {
            "method": exchange.method,
            "target": exchange.target,
            "headers": headers,
            "body": body,
        },
        "response": {
            "status": exchange.status,
            "tierwise_headers": [
                [n, v] for n, v in exchange.response_headers if n.startswith("x-tierwise-")
            ],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claude", type=Path, default=PINNED_CLAUDE)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--with-nonessential-traffic", action="store_true")
    args = parser.parse_args(argv)
    offline = not args.with_nonessential_traffic
    tmp = Path(tempfile.mkdtemp(prefix="record-claude-code-"))
    try:
        written = []
        runs: list[tuple[str, ClaudeRun, str]] = []
        for scenario in ("plain", "tool_loop"):
            with open_rig(args.claude.resolve(), tmp / scenario) as rig:
                if scenario == "plain":
                    rig.upstream.respond = answer_plainly("2 + 2 = 4")
                    run = rig.run("What is 2+2? Answer with one number.", offline=offline)
                else:
                    (rig.workdir / "notes.txt").write_text("The secret word is pelican.\n")
                    rig.upstream.respond = shout_the_notes
                    run = rig.run(
                        "Shout what notes.txt says.", "--allowedTools", "Bash", offline=offline
                    )
                agent = next(v for k, v in run.exchanges[-1].headers if k == "user-agent")
                version = agent.split("/", 1)[1].split(" ", 1)[0]
                runs.append((scenario, run, version))
        for scenario, run, version in runs:
            folder = args.out / version
            folder.mkdir(parents=True, exist_ok=True)
            for exchange in run.exchanges:
                n = len(list(folder.glob("*.json"))) + 1
                data = envelope(exchange, scenario, version, offline, tmp / scenario)
                path = folder / f"{n:02d}-{scenario}-{data['kind']}.json"
                path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
                written.append(path)
        for path in written:
            print(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
