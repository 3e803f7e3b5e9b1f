"""The floor for any uvicorn-based gateway on this machine: a bare ASGI app that reads the
request body and answers the fake upstream's fixed JSON, with no upstream call and no work.
``make bench`` serves it with ``uvicorn --loop uvloop --http httptools`` (as ``tierwise serve``
runs) and drives it like the others; no Python gateway under uvicorn can be faster than this.
"""

from __future__ import annotations

from typing import Any

_BODY = (
    b'{"id":"msg_bench_0001","type":"message","role":"assistant","model":"claude-haiku-4-5",'
    b'"content":[{"type":"text","text":"Hello from the benchmark upstream."}],'
    b'"stop_reason":"end_turn","stop_sequence":null,'
    b'"usage":{"input_tokens":12,"output_tokens":8}}'
)
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})
