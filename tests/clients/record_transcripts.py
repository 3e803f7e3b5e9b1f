"""Record a real Claude Code session transcript, and what the CLI sent, as fixtures in
tests/data/claude_code/transcripts/<version>/.

    .venv/bin/python -m tests.clients.record_transcripts                     # the pinned CLI
    .venv/bin/python -m tests.clients.record_transcripts --claude PATH       # another version

Runs :func:`tests.clients.transcript_session.run_session` through the rig of
tests/clients/test_claude_code.py (the CLI -> recorder -> tierwise serve -> fake upstream) in
the fixed directory /tmp/claude-code (so the paths in the transcript, which its message hashes
cover, are the same on every machine), then writes:

* ``projects/``: the CLI's ``~/.claude/projects`` as it left it (its session transcript and
  the sub-agent's), gzip-compressed file by file;
* ``sent.json``: every model call the CLI made, in order, as
  :func:`~tests.clients.transcript_session.sent_request` describes it (digests of what was
  sent, the parameters, the gateway's session rule and tier, the usage streamed back).

The transcript holds the fake model's answers, the prompts above, and Claude Code's own texts
(its system prompt, tool definitions and reminders), as the envelope fixtures next to it do;
no key (the gateway key never reaches a transcript; the recorder checks).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
from pathlib import Path

from tests.clients.claude_rig import PINNED_CLAUDE, open_rig
from tests.clients.scripted_upstream import request_kind
from tests.clients.transcript_session import run_session, sent_request

OUT = Path(__file__).resolve().parents[1] / "data" / "claude_code" / "transcripts"
WORK = Path("/tmp/claude-code")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claude", type=Path, default=PINNED_CLAUDE)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    try:
        with open_rig(args.claude.resolve(), WORK) as rig:
            run_session(rig)
            calls = [
                e
                for run in rig.runs
                for e in run.messages
                if request_kind(json.loads(e.body)) != "structured"
            ]
            agent = next(v for k, v in calls[0].headers if k == "user-agent")
            version = agent.split("/", 1)[1].split(" ", 1)[0]
            sent = [sent_request(e) for e in calls]
            key = rig.gateway_key
            projects = rig.home / ".claude" / "projects"
            folder = args.out / version
            shutil.rmtree(folder, ignore_errors=True)
            for path in sorted(projects.rglob("*")):
                if not path.is_file():
                    continue
                raw = path.read_bytes()
                if key.encode() in raw:
                    raise SystemExit(f"{path} holds the gateway key: not writing it")
                target = folder / "projects" / path.relative_to(projects)
                target.parent.mkdir(parents=True, exist_ok=True)
                if path.name.endswith(".jsonl"):
                    target = target.with_name(target.name + ".gz")
                    raw = gzip.compress(raw, mtime=0)
                target.write_bytes(raw)
                print(target)
            (folder / "sent.json").write_text(json.dumps(sent, indent=1) + "\n")
            print(folder / "sent.json")
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
