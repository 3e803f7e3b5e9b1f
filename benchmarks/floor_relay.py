"""The floor of any Python relay on this machine (the long-stream benchmark's ``floor``
target): uvloop protocols that pass bytes from the upstream to the client and back, with no
parsing, no checks, no HTTP of their own: one upstream connection per client connection, the
client's bytes forwarded as they come, the upstream's bytes written to the client in the same
callback. What it costs per relayed event (one read and one write through the kernel, the
loop's wake-ups) no relay built on uvloop can go below; tierwise's figures are read against it.

    python benchmarks/floor_relay.py --port 9300 --upstream-port 9100
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys


class _Upstream(asyncio.Protocol):
    def __init__(self, client: _Client) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        if self.client.transport is not None:
            self.client.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client.transport is not None:
            self.client.transport.close()


class _Client(asyncio.Protocol):
    upstream_port = 0

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            upstream, _ = await loop.create_connection(
                lambda: _Upstream(self), "127.0.0.1", self.upstream_port
            )
        except OSError:
            if self.transport is not None:
                self.transport.close()
            return
        self.upstream = upstream  # type: ignore[assignment]
        for data in self.pending:
            upstream.write(data)
        self.pending = []

    def data_received(self, data: bytes) -> None:
        if self.upstream is None:
            self.pending.append(data)
        else:
            self.upstream.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_server(_Client, "127.0.0.1", port, backlog=4096, reuse_address=True)
    print(f"floor relay on http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    _Client.upstream_port = args.upstream_port
    import uvloop

    uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
