"""The upstream client through HTTP proxies (issue 16 item 4): ``HTTPS_PROXY``/``HTTP_PROXY``
and ``NO_PROXY`` read once from the environment given, a ``CONNECT`` tunnel then TLS to the
origin (a local asyncio proxy and a TLS fake upstream with a test CA), absolute-form requests
for an ``http://`` origin, and proxy credentials sent but never shown."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anthropic
import orjson
import pytest
import trustme
import uvloop

from tests.conftest import ListSink
from tests.fakes.hostile_upstream import HostileUpstream
from tests.servers import ServerThread
from tierwise.config import GatewayConfig, Settings, load, revalidate
from tierwise.errors import ConfigError
from tierwise.gateway import build_app
from tierwise.gateway.http1 import Pool, Proxy, ProxyError, _no_proxy_match, proxy_for
from tierwise.gateway.upstream import HttpUpstream, UpstreamError

PASSWORD = "s3cr%40t-pa55"  # percent-encoded in the URL: the password is "s3cr@t-pa55"
ORIGIN = "upstream.test"  # resolved by the test proxy only


class ConnectProxy:
    """A small HTTP proxy on 127.0.0.1 (a thread with its own loop): ``CONNECT`` tunnels and
    absolute-form requests, optional Basic credentials, names resolved from ``hosts``."""

    def __init__(
        self,
        *,
        credentials: str | None = None,
        hosts: dict[str, str] | None = None,
        answer: bytes | None = None,
    ) -> None:
        self.credentials = credentials
        self.hosts = hosts or {}
        self.answer = answer  # a canned reply to CONNECT instead of a tunnel
        self.seen: list[tuple[str, str, str | None]] = []  # method, target, proxy-authorization
        self.client_bytes = bytearray()  # what went from the client to the origin
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        auth = f"{self.credentials}@" if self.credentials else ""
        return f"http://{auth}127.0.0.1:{port}"

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: bool
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                if record and len(self.client_bytes) < 1 << 20:
                    self.client_bytes += data
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        first, *lines = head.decode("latin-1").split("\r\n")
        method, target, _ = first.split(" ")
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines if ln)
        }
        auth = headers.get("proxy-authorization")
        self.seen.append((method, target, auth))
        if self.credentials is not None:
            user, _, password = self.credentials.partition(":")
            from urllib.parse import unquote

            token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
            if auth != f"Basic {token}":
                writer.write(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n"
                )
                await writer.drain()
                writer.close()
                return
        if method == "CONNECT":
            if self.answer is not None:
                writer.write(self.answer)
                await writer.drain()
                writer.close()
                return
            host, _, port = target.rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(
                self.hosts.get(host, host), int(port)
            )
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
        else:  # absolute-form: forward the request as it is, minus the proxy's own header
            from urllib.parse import urlsplit

            parts = urlsplit(target)
            host = parts.hostname or ""
            up_reader, up_writer = await asyncio.open_connection(
                self.hosts.get(host, host), parts.port or 80
            )
            kept = [
                ln
                for ln in head.split(b"\r\n")
                if not ln.lower().startswith(b"proxy-authorization:")
            ]
            up_writer.write(b"\r\n".join(kept))
        await asyncio.gather(
            self._pipe(reader, up_writer, record=True), self._pipe(up_reader, writer, record=False)
        )

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    def __enter__(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
def tls_upstream(ca: trustme.CA) -> Iterator[HostileUpstream]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(ORIGIN, "localhost").configure_cert(context)
    with HostileUpstream(ssl_context=context, url_host=ORIGIN) as upstream:
        yield upstream


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def run(coro: Coroutine[Any, Any, None], loop: str = "asyncio") -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(asyncio.wait_for(coro, 20))


REQUEST = orjson.dumps({"model": "claude-haiku-4-5", "max_tokens": 5, "messages": []})


@pytest.mark.parametrize("loop", LOOPS)
def test_https_goes_through_a_connect_tunnel_with_credentials_and_tls_to_the_origin(
    loop: str, tls_upstream: HostileUpstream, client_tls: ssl.SSLContext
) -> None:
    with ConnectProxy(credentials=f"tierwise:{PASSWORD}", hosts={ORIGIN: "127.0.0.1"}) as proxy:
        upstream = HttpUpstream(
            tls_upstream.base_url,
            "sk-ant-upstream-key",
            proxy=Proxy.parse(proxy.url),
            ssl_context=client_tls,
        )

        async def main() -> None:
            for _ in range(2):  # the second request reuses the tunnel
                reply = await upstream.post("/v1/messages", REQUEST, {}, stream=False, timeout_s=5)
                assert reply.status == 200
                assert orjson.loads(reply.body or b"")["type"] == "message"
            await upstream.aclose()

        run(main(), loop)
    token = base64.b64encode(b"tierwise:s3cr@t-pa55").decode()
    assert proxy.seen == [("CONNECT", f"{ORIGIN}:{tls_upstream.port}", f"Basic {token}")]
    # The proxy only ever saw TLS: neither the path nor the upstream key in clear.
    assert proxy.client_bytes
    assert b"/v1/messages" not in proxy.client_bytes
    assert b"sk-ant-upstream-key" not in proxy.client_bytes
    assert [r.path for r in tls_upstream.received] == ["/v1/messages", "/v1/messages"]
    assert tls_upstream.received[0].headers["x-api-key"] == "sk-ant-upstream-key"
    assert "proxy-authorization" not in tls_upstream.received[0].headers


def test_a_direct_tls_upstream_uses_the_given_ssl_context(
    ca: trustme.CA, client_tls: ssl.SSLContext
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    with HostileUpstream(ssl_context=context, url_host="localhost") as upstream:

        async def main() -> None:
            pool = Pool(upstream.base_url, ssl_context=client_tls)
            response = await pool.post("/v1/messages", REQUEST, {}, 5)
            assert response.status == 200
            await response.read(5)
            await pool.aclose()
            untrusted = Pool(upstream.base_url)  # the system CAs do not know the test CA
            with pytest.raises(ssl.SSLCertVerificationError):
                await untrusted.post("/v1/messages", REQUEST, {}, 5)
            await untrusted.aclose()

        run(main())


def test_wrong_proxy_credentials_are_a_clear_error_that_never_shows_them(
    tls_upstream: HostileUpstream, client_tls: ssl.SSLContext
) -> None:
    with ConnectProxy(credentials="tierwise:right", hosts={ORIGIN: "127.0.0.1"}) as proxy:
        wrong = proxy.url.replace("tierwise:right", f"tierwise:{PASSWORD}")
        upstream = HttpUpstream(
            tls_upstream.base_url, "k", proxy=Proxy.parse(wrong), ssl_context=client_tls
        )

        async def main() -> None:
            with pytest.raises(UpstreamError) as caught:
                await upstream.post("/v1/messages", REQUEST, {}, stream=False, timeout_s=5)
            error = caught.value
            assert error.kind == "connection_error"
            assert "407" in str(error)
            assert "proxy authentication required" in str(error)
            for text in (str(error), repr(error), repr(upstream.proxy), str(error.__cause__)):
                assert "s3cr" not in text
                assert "pa55" not in text
            await upstream.aclose()

        run(main())


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n", "refused CONNECT to .*: 403"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "a malformed reply"),
        (b"HTTP/1.1 200 OK\r\n" + b"x: y\r\n" * 20000, "larger than 65536 bytes"),
        (b"HTTP/1.1 200 OK\r\n\r\nearly bytes", "data before the TLS handshake"),
    ],
    ids=["403", "not-http", "huge-head", "early-bytes"],
)
def test_a_proxy_that_refuses_or_misbehaves_is_a_connection_error(
    answer: bytes, message: str, client_tls: ssl.SSLContext
) -> None:
    with ConnectProxy(answer=answer) as proxy:

        async def main() -> None:
            pool = Pool(
                f"https://{ORIGIN}:443", proxy=Proxy.parse(proxy.url), ssl_context=client_tls
            )
            with pytest.raises(ProxyError, match=message):
                await pool.post("/v1/messages", REQUEST, {}, 5)
            assert pool.stats()["open"] == 0
            await pool.aclose()

        run(main())


def test_an_http_origin_gets_absolute_form_requests_with_the_proxy_credentials() -> None:
    with (
        HostileUpstream(url_host="plain.test") as origin,
        ConnectProxy(credentials="u:p", hosts={"plain.test": "127.0.0.1"}) as proxy,
    ):
        upstream = HttpUpstream(origin.base_url + "/base", "k", proxy=Proxy.parse(proxy.url))
        target = f"http://plain.test:{origin.port}/base/v1/messages"

        async def main() -> None:
            reply = await upstream.post("/v1/messages", REQUEST, {}, stream=False, timeout_s=5)
            assert reply.status == 200
            await upstream.aclose()

        run(main())
    token = base64.b64encode(b"u:p").decode()
    assert proxy.seen == [("POST", target, f"Basic {token}")]
    assert origin.received[0].path == target
    assert "proxy-authorization" not in origin.received[0].headers


# -- which proxy, from the environment given ---------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "bypass"),
    [
        ("api.anthropic.com", 443, "*", True),
        ("api.anthropic.com", 443, "anthropic.com", True),
        ("api.anthropic.com", 443, ".anthropic.com", True),
        ("api.anthropic.com", 443, "*.anthropic.com", True),
        ("anthropic.com", 443, ".anthropic.com", True),
        ("notanthropic.com", 443, "anthropic.com", False),
        ("api.anthropic.com", 443, "other.com, api.anthropic.com", True),
        ("api.anthropic.com", 443, "other.com api.anthropic.com", True),
        ("API.Anthropic.COM", 443, "api.anthropic.com", True),
        ("api.anthropic.com", 443, "api.anthropic.com:443", True),
        ("api.anthropic.com", 8443, "api.anthropic.com:443", False),
        ("10.1.2.3", 80, "10.0.0.0/8", True),
        ("11.1.2.3", 80, "10.0.0.0/8", False),
        ("127.0.0.1", 80, "127.0.0.1", True),
        ("::1", 443, "[::1]", True),
        ("::1", 443, "[::1]:443", True),
        ("::1", 443, "[::1]:80", False),
        ("api.anthropic.com", 443, "", False),
        ("api.anthropic.com", 443, ",,", False),
    ],
)
def test_no_proxy_entries(host: str, port: int, no_proxy: str, bypass: bool) -> None:
    assert _no_proxy_match(host, port, no_proxy) is bypass


def test_proxy_for_reads_the_environment_given_lower_case_first() -> None:
    https = "https://api.anthropic.com"
    assert proxy_for(https, {}) is None
    assert proxy_for(https, {"HTTP_PROXY": "http://p:1"}) is None  # http only
    assert proxy_for(https, {"HTTPS_PROXY": "http://upper:1"}) == Proxy("upper", 1)
    both = {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2"}
    assert proxy_for(https, both) == Proxy("lower", 2)
    assert proxy_for("http://fake:9000", {"HTTP_PROXY": "proxy:3128"}) == Proxy("proxy", 3128)
    assert proxy_for("http://fake:9000", {"http_proxy": "proxy"}) == Proxy("proxy", 80)
    assert proxy_for(https, {"https_proxy": "http://p:1", "NO_PROXY": "anthropic.com"}) is None
    assert proxy_for(https, {"https_proxy": "http://p:1", "no_proxy": "*"}) is None
    # Configuration wins over the environment; "" means none at all.
    env = {"https_proxy": "http://env:1", "no_proxy": "*"}
    assert proxy_for(https, env, proxy="") is None
    assert proxy_for(https, env, proxy="http://conf:2", no_proxy="") == Proxy("conf", 2)
    assert proxy_for(https, env, proxy="http://conf:2") is None  # NO_PROXY still applies


def test_proxy_urls_that_cannot_be_used_are_refused_without_repeating_credentials() -> None:
    for url, message in (
        (f"socks5://u:{PASSWORD}@p:1080", "scheme 'socks5' is not supported"),
        (f"https://u:{PASSWORD}@p:443", "scheme 'https' is not supported"),
        (f"http://u:{PASSWORD}@:8080", "no host"),
        (f"http://u:{PASSWORD}@p:99999", "not valid"),
    ):
        with pytest.raises(ValueError, match=message) as caught:
            Proxy.parse(url)
        assert "s3cr" not in str(caught.value)
    proxy = Proxy.parse(f"http://tierwise:{PASSWORD}@proxy.corp:3128")
    assert proxy.display == "http://proxy.corp:3128"
    assert repr(proxy) == "Proxy(http://proxy.corp:3128, with credentials)"
    assert proxy.authorization == "Basic " + base64.b64encode(b"tierwise:s3cr@t-pa55").decode()


def with_gateway(settings: Settings, **fields: Any) -> Settings:
    """``settings`` with gateway fields validated as if read from the TOML file."""
    gateway = GatewayConfig.model_validate({**settings.gateway.model_dump(), **fields})
    return revalidate(settings, gateway=gateway)


def test_from_settings_takes_the_proxy_from_settings_or_the_environment(tmp_path: Path) -> None:
    settings = load(
        environ={
            "TIERWISE_HOME": str(tmp_path),
            "ANTHROPIC_API_KEY": "sk-ant-x",
            "ANTHROPIC_BASE_URL": "https://api.anthropic.com",
        }
    )
    env = {"HTTPS_PROXY": f"http://u:{PASSWORD}@env-proxy:3128"}
    assert HttpUpstream.from_settings(settings, {}).proxy is None
    via_env = HttpUpstream.from_settings(settings, env).proxy
    assert via_env is not None and via_env.host == "env-proxy"
    assert HttpUpstream.from_settings(settings, {**env, "NO_PROXY": "anthropic.com"}).proxy is None
    configured = with_gateway(
        settings, upstream_proxy=f"http://u:{PASSWORD}@conf:8080", upstream_no_proxy=""
    )
    assert "s3cr" not in repr(configured)  # the proxy URL is a secret in the settings
    upstream = HttpUpstream.from_settings(configured, {**env, "NO_PROXY": "*"})
    assert upstream.proxy == Proxy.parse(f"http://u:{PASSWORD}@conf:8080")
    off = with_gateway(settings, upstream_proxy="")
    assert HttpUpstream.from_settings(off, env).proxy is None
    bad = revalidate(
        settings,
        gateway=settings.gateway.model_copy(
            update={"upstream_proxy": f"socks5://u:{PASSWORD}@x:1"}
        ),
    )
    with pytest.raises(ConfigError, match=r"gateway\.upstream_proxy: proxy scheme") as caught:
        HttpUpstream.from_settings(bad, {})
    assert "s3cr" not in str(caught.value)


def test_the_gateway_reaches_a_tls_upstream_through_a_proxy_from_the_environment(
    tls_upstream: HostileUpstream, client_tls: ssl.SSLContext, tmp_path: Path
) -> None:
    settings = load(
        environ={
            "TIERWISE_HOME": str(tmp_path),
            "ANTHROPIC_API_KEY": "sk-ant-upstream-key",
            "ANTHROPIC_BASE_URL": tls_upstream.base_url,
        }
    )
    with ConnectProxy(credentials=f"gw:{PASSWORD}", hosts={ORIGIN: "127.0.0.1"}) as proxy:
        upstream = HttpUpstream.from_settings(
            settings, {"HTTPS_PROXY": proxy.url}, ssl_context=client_tls
        )
        sink = ListSink()
        with ServerThread(build_app(settings, sink=sink, upstream=upstream)) as server:
            client = anthropic.Anthropic(base_url=server.base_url, api_key="c", max_retries=0)
            message = client.messages.create(
                model="claude-haiku-4-5",
                max_tokens=20,
                messages=[{"role": "user", "content": "hi"}],
            )
    assert message.content[0].type == "text"
    assert [method for method, _, _ in proxy.seen] == ["CONNECT"]
    assert sink.entries[-1].status == "ok"
