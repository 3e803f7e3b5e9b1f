"""The gateway in front of a malicious upstream (issue 11, "Bad upstream data" and
"Upstream-driven memory and CPU exhaustion"), driven by the official SDKs.

What every attack must give: a well-formed error in the client's dialect (a 502, or an
``event: error`` / an OpenAI error chunk once a stream has started), never a 200 for bad data;
the gateway's memory bounded (peak RSS growth, measured with ``VmHWM`` after a reset); and
``/health`` answering while the attack runs.

Timing: the working agreement keeps timed assertions out of tests, so ``/health`` is held to a
loose bound here (``TIERWISE_HEALTH_BOUND_S``, default 1 s, against the 9-26 s stalls this
suite was written against); the 100 ms target is for the full-size run (``make chaos`` / a load
script with :mod:`tests.fakes.hostile_upstream`), with the variable set to 0.1.

Tests marked ``hostile`` name the part of the request path they check (``check_message`` on
every 200, the deadline over the whole stream, the relays framing with ``EventSplitter``, any
status but 200 as an upstream error).
"""

from __future__ import annotations

import http.client
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import ListSink
from tests.fakes.hostile_upstream import HostileUpstream, MiB
from tests.servers import ServerThread
from tierwise.config import Settings, load, revalidate
from tierwise.gateway import build_app
from tierwise.gateway.upstream import HttpUpstream

HEALTH_BOUND_S = float(os.environ.get("TIERWISE_HEALTH_BOUND_S", "1.0"))
RSS_BOUND_MB = 150.0  # growth of the whole test process (gateway, fake and client) per attack
MODEL = "claude-haiku-4-5"  # a model id, not a tier: one upstream target, no fallbacks
MESSAGES: Any = [{"role": "user", "content": "Say hello."}]


def needs(call: str) -> pytest.MarkDecorator:
    """Documents which part of the request path a test exercises (all are wired now)."""
    del call
    return pytest.mark.hostile


CHECK_MESSAGE = needs("check_message() on every 200 reply before it is answered or converted")
DEADLINE = needs("HttpUpstream.post(..., deadline=) for the whole request, streamed body included")
RELAY = needs("the relays framing with EventSplitter (raw events) instead of complete_events")
NON_200 = needs("the engine treating any status but 200 as an upstream error (UpstreamReply.ok)")


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileUpstream]:
    with HostileUpstream() as upstream:
        yield upstream


@dataclass
class Gateway:
    base_url: str
    sink: ListSink
    settings: Settings

    def anthropic(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            base_url=self.base_url, api_key="client-key", max_retries=0, timeout=30
        )

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.base_url + "/v1", api_key="client-key", max_retries=0, timeout=30
        )

    def entries(self, count: int, timeout_s: float = 5.0) -> list[Any]:
        """The first ``count`` ledger entries (a stream is recorded just after its last byte)."""
        deadline = time.monotonic() + timeout_s
        while len(self.sink.entries) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.sink.entries[:count]

    def last_entry_status(self, timeout_s: float = 5.0) -> str | None:
        deadline = time.monotonic() + timeout_s
        while not self.sink.entries and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.sink.entries[-1].status if self.sink.entries else None


GatewayFactory = Callable[..., Gateway]


@pytest.fixture
def make_gateway(hostile: HostileUpstream, tmp_path: Path) -> Iterator[GatewayFactory]:
    servers: list[ServerThread] = []

    def start(
        default: str = "normal", params: dict[str, Any] | None = None, **gateway_overrides: Any
    ) -> Gateway:
        """A gateway in front of ``hostile``, which behaves as ``default`` (with ``params``)
        for every request; keyword arguments override gateway settings."""
        hostile.reset()
        hostile.set_default(default, **(params or {}))
        settings = load(
            environ={
                "TIERWISE_HOME": str(tmp_path),
                "ANTHROPIC_API_KEY": "sk-ant-hostile-test",
                "ANTHROPIC_BASE_URL": hostile.base_url,
            }
        )
        overrides = {
            "max_attempts": 1,
            "retry_after_cap_s": 0.05,
            "upstream_timeout_s": 20.0,
            "attempt_timeout_s": 20.0,
            "upstream_max_body_bytes": 8 * MiB,
            "upstream_max_stream_bytes": 16 * MiB,
            **gateway_overrides,
        }
        settings = revalidate(settings, gateway=settings.gateway.model_copy(update=overrides))
        sink = ListSink()
        upstream = HttpUpstream.from_settings(settings, {})
        server = ServerThread(build_app(settings, sink=sink, upstream=upstream)).start()
        servers.append(server)
        return Gateway(server.base_url, sink, settings)

    yield start
    for server in servers:
        server.stop()
    hostile.set_default("normal")


# -- watching the gateway while an attack runs -----------------------------------------------


def _status_kb(field_name: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        match = re.search(rf"^{field_name}:\s+(\d+) kB", status.read(), re.MULTILINE)
    assert match is not None
    return int(match.group(1))


@dataclass
class Watch:
    health_s: list[float] = field(default_factory=list)
    health_failures: list[str] = field(default_factory=list)
    rss_growth_mb: float = 0.0

    def check(self) -> None:
        assert not self.health_failures, self.health_failures[:3]
        assert self.health_s, "/health was never answered during the attack"
        worst = max(self.health_s)
        assert worst < HEALTH_BOUND_S, f"/health took {worst:.3f}s during the attack"
        assert self.rss_growth_mb < RSS_BOUND_MB, f"RSS grew by {self.rss_growth_mb:.0f} MB"


@contextmanager
def watch(gateway: Gateway) -> Iterator[Watch]:
    """Poll ``/health`` every 20 ms and measure the peak RSS growth while the block runs."""
    result = Watch()
    baseline = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
        refs.write("5")  # resets VmHWM (the peak RSS) to the current RSS
    stop = threading.Event()

    def poll() -> None:
        host, port = gateway.base_url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    connection.request("GET", "/health")
                    response = connection.getresponse()
                    response.read()
                    if response.status != 200:
                        result.health_failures.append(f"status {response.status}")
                except (OSError, http.client.HTTPException) as exc:
                    result.health_failures.append(repr(exc))
                    connection.close()
                result.health_s.append(time.perf_counter() - started)
                stop.wait(0.02)
        finally:
            connection.close()

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        yield result
    finally:
        stop.set()
        poller.join(30)
        result.rss_growth_mb = (_status_kb("VmHWM") - baseline) / 1024


# -- what the clients see --------------------------------------------------------------------


def anthropic_error(gateway: Gateway, *, stream: bool) -> anthropic.APIStatusError:
    """The error the Anthropic SDK raises (a 502, or an error event inside a 200 stream)."""
    client = gateway.anthropic()

    def call() -> None:
        if stream:
            events = client.messages.create(
                model=MODEL, max_tokens=50, messages=MESSAGES, stream=True
            )
            for event in events:
                assert event.type != "message_stop", "the stream ended as a success"
        else:
            client.messages.create(model=MODEL, max_tokens=50, messages=MESSAGES)

    with pytest.raises(anthropic.APIStatusError) as caught:
        call()
    error = caught.value
    assert error.status_code in (200, 502), error.status_code  # 200: an error event mid-stream
    body = error.body
    if error.status_code == 502:
        assert isinstance(body, dict) and body.get("type") == "error"
        assert isinstance(body["error"]["type"], str) and body["error"]["message"]
    return error


def openai_error(gateway: Gateway, *, stream: bool) -> openai.APIError:
    client = gateway.openai()

    def call() -> None:
        if stream:
            chunks = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
            for chunk in chunks:
                assert not (chunk.choices and chunk.choices[0].finish_reason), "ended as success"
        else:
            client.chat.completions.create(model=MODEL, messages=MESSAGES)

    with pytest.raises(openai.APIError) as caught:
        call()
    error = caught.value
    if isinstance(error, openai.APIStatusError):
        assert error.status_code == 502
        assert isinstance(error.body, dict) and error.body.get("message")
    return error


# -- controls ----------------------------------------------------------------------------------


def test_a_well_formed_upstream_still_works(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway("normal")
    message = gateway.anthropic().messages.create(model=MODEL, max_tokens=50, messages=MESSAGES)
    assert message.content[0].type == "text"
    with gateway.anthropic().messages.stream(
        model=MODEL, max_tokens=50, messages=MESSAGES
    ) as stream:
        assert stream.get_final_message().usage.output_tokens == 7
    completion = gateway.openai().chat.completions.create(model=MODEL, messages=MESSAGES)
    assert completion.choices[0].message.content
    text = "".join(
        c.choices[0].delta.content or ""
        for c in gateway.openai().chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True
        )
        if c.choices
    )
    assert text == "Hello from the fake."
    assert [e.status for e in gateway.entries(4)] == ["ok"] * 4


# -- exhaustion: sizes ---------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["anthropic", "openai"])
def test_a_gzip_bomb_is_a_502_with_bounded_memory(
    make_gateway: GatewayFactory, dialect: str
) -> None:
    gateway = make_gateway("gzip_bomb", params={"decoded_bytes": 512 * MiB})
    with watch(gateway) as seen:
        if dialect == "anthropic":
            error = anthropic_error(gateway, stream=False)
            assert error.status_code == 502
        else:
            openai_error(gateway, stream=False)
    seen.check()
    assert gateway.last_entry_status() == "error"


@pytest.mark.parametrize("dialect", ["anthropic", "openai"])
def test_a_streamed_gzip_bomb_ends_in_an_error_with_bounded_memory(
    make_gateway: GatewayFactory, dialect: str
) -> None:
    gateway = make_gateway(
        "gzip_bomb", upstream_max_stream_bytes=4 * MiB, params={"decoded_bytes": 512 * MiB}
    )
    with watch(gateway) as seen:
        if dialect == "anthropic":
            anthropic_error(gateway, stream=True)
        else:
            openai_error(gateway, stream=True)
    seen.check()
    assert gateway.last_entry_status() == "error"


@pytest.mark.parametrize("attack", ["huge_headers", "huge_header"])
def test_oversized_response_heads_are_refused(make_gateway: GatewayFactory, attack: str) -> None:
    gateway = make_gateway(attack)
    with watch(gateway) as seen:
        for stream in (False, True):
            error = anthropic_error(gateway, stream=stream)
            assert error.status_code == 502
            assert len(error.response.headers.get("request-id", "")) < 1000
        openai_error(gateway, stream=False)
    seen.check()


@RELAY
def test_a_20_mb_sse_line_is_cut_at_the_event_limit_while_health_answers(
    make_gateway: GatewayFactory,
) -> None:
    gateway = make_gateway(
        "long_line", upstream_max_stream_bytes=64 * MiB, params={"line_bytes": 20 * 1000 * 1000}
    )
    with watch(gateway) as seen:
        error = anthropic_error(gateway, stream=True)
        assert error.status_code == 200  # an error event, after the stream started
        openai_error(gateway, stream=True)
    seen.check()
    assert gateway.last_entry_status() == "error"


# -- exhaustion: time ----------------------------------------------------------------------------


def read_stream_until_error(gateway: Gateway, guard_s: float) -> anthropic.APIStatusError:
    """Read a stream that the gateway must cut; give up (fail) after ``guard_s``."""
    client = gateway.anthropic()
    started = time.monotonic()
    try:
        for event in client.messages.create(
            model=MODEL, max_tokens=50, messages=MESSAGES, stream=True
        ):
            assert event.type != "message_stop"
            if time.monotonic() - started > guard_s:
                pytest.fail(f"the stream was still running after {guard_s}s")
    except anthropic.APIStatusError as exc:
        return exc
    pytest.fail("the stream ended without an error")


@DEADLINE
def test_an_endless_stream_is_cut_at_the_request_deadline(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway("endless", upstream_timeout_s=1.0, attempt_timeout_s=1.0)
    error = read_stream_until_error(gateway, guard_s=8)
    assert isinstance(error.body, dict)
    assert error.body["error"]["type"] == "timeout_error"
    assert gateway.last_entry_status() == "error"


@DEADLINE
def test_a_trickling_stream_is_cut_at_the_request_deadline(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(
        "trickle",
        upstream_timeout_s=2.0,
        attempt_timeout_s=2.0,
        params={"interval_s": 0.05, "fast_events": 3},
    )  # ~60 s of trickle
    error = read_stream_until_error(gateway, guard_s=8)
    assert isinstance(error.body, dict)
    assert error.body["error"]["type"] == "timeout_error"


# -- bad data: non-streaming -----------------------------------------------------------------------

BAD_REPLIES = ["invalid_utf8", "nan", "empty_object", "error_200", "content_strings"]
# Today's Anthropic dialect already answers a body that is not JSON with a 502.
ANTHROPIC_ALREADY = {"invalid_utf8", "nan"}


@pytest.mark.parametrize(
    "attack",
    [a if a in ANTHROPIC_ALREADY else pytest.param(a, marks=CHECK_MESSAGE) for a in BAD_REPLIES],
)
def test_bad_replies_are_502s_in_the_anthropic_dialect(
    make_gateway: GatewayFactory, attack: str
) -> None:
    gateway = make_gateway(attack)
    error = anthropic_error(gateway, stream=False)
    assert error.status_code == 502
    assert gateway.last_entry_status() == "error"


@CHECK_MESSAGE
@pytest.mark.parametrize("attack", BAD_REPLIES)
def test_bad_replies_are_502s_in_the_openai_dialect(
    make_gateway: GatewayFactory, attack: str
) -> None:
    gateway = make_gateway(attack)
    openai_error(gateway, stream=False)
    assert gateway.last_entry_status() == "error"


@CHECK_MESSAGE
@pytest.mark.parametrize("value", [-5, "12", 2.5])
@pytest.mark.parametrize("dialect", ["anthropic", "openai"])
def test_ill_typed_usage_in_a_reply_is_a_502(
    make_gateway: GatewayFactory, value: Any, dialect: str
) -> None:
    gateway = make_gateway("usage", params={"value": value})
    if dialect == "anthropic":
        assert anthropic_error(gateway, stream=False).status_code == 502
    else:
        openai_error(gateway, stream=False)
    assert gateway.last_entry_status() == "error"


# -- bad data: streams ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-5, "12", 2.5, True])
@pytest.mark.parametrize("dialect", ["anthropic", "openai"])
def test_ill_typed_usage_in_a_stream_ends_it_with_an_error(
    make_gateway: GatewayFactory, value: Any, dialect: str
) -> None:
    gateway = make_gateway("usage", params={"value": value})
    if dialect == "anthropic":
        anthropic_error(gateway, stream=True)
    else:
        openai_error(gateway, stream=True)
    assert gateway.last_entry_status() == "error"


@pytest.mark.parametrize("index", [7, "0", -1])
@pytest.mark.parametrize("dialect", ["anthropic", "openai"])
def test_a_bad_block_index_in_a_stream_ends_it_with_an_error(
    make_gateway: GatewayFactory, index: Any, dialect: str
) -> None:
    gateway = make_gateway("bad_index", params={"index": index})
    if dialect == "anthropic":
        error = anthropic_error(gateway, stream=True)
        assert error.status_code == 200  # after the first delta: an error event
    else:
        openai_error(gateway, stream=True)
    assert gateway.last_entry_status() == "error"


@pytest.mark.parametrize("dialect", ["anthropic", "openai"])
def test_a_reset_mid_body_is_an_error(make_gateway: GatewayFactory, dialect: str) -> None:
    gateway = make_gateway("reset")
    for stream in (False, True):
        if dialect == "anthropic":
            anthropic_error(gateway, stream=stream)
        else:
            openai_error(gateway, stream=stream)


@pytest.mark.parametrize("dialect", ["anthropic", "openai"])
def test_a_cr_only_stream_completes_without_a_spurious_error(
    make_gateway: GatewayFactory, dialect: str
) -> None:
    gateway = make_gateway("cr_only")
    if dialect == "anthropic":
        with gateway.anthropic().messages.stream(
            model=MODEL, max_tokens=50, messages=MESSAGES
        ) as stream:
            final = stream.get_final_message()
        assert final.content[0].type == "text"
        assert final.content[0].text == "Hello from the fake."
    else:
        chunks = list(
            gateway.openai().chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        )
        assert chunks[-1].choices[0].finish_reason == "stop"
    assert gateway.last_entry_status() == "ok"


# -- odd statuses and encodings --------------------------------------------------------------------


@NON_200
@pytest.mark.parametrize("dialect", ["anthropic", "openai"])
def test_a_redirect_on_a_stream_is_a_502(make_gateway: GatewayFactory, dialect: str) -> None:
    gateway = make_gateway("redirect")
    if dialect == "anthropic":
        assert anthropic_error(gateway, stream=True).status_code == 502
    else:
        openai_error(gateway, stream=True)
    assert gateway.last_entry_status() == "error"


@pytest.mark.parametrize(
    ("attack", "params"),
    [
        ("redirect", {}),
        ("status", {"status": 204}),
        pytest.param("status", {"status": 201, "body": "{}"}, marks=NON_200),
    ],
    ids=["302", "204", "201"],
)
def test_odd_statuses_without_a_stream_are_502s_in_the_anthropic_dialect(
    make_gateway: GatewayFactory, attack: str, params: dict[str, Any]
) -> None:
    gateway = make_gateway(attack, params=dict(**params))
    assert anthropic_error(gateway, stream=False).status_code == 502


@NON_200
@pytest.mark.parametrize(
    ("attack", "params"), [("redirect", {}), ("status", {"status": 204})], ids=["302", "204"]
)
def test_odd_statuses_without_a_stream_are_502s_in_the_openai_dialect(
    make_gateway: GatewayFactory, attack: str, params: dict[str, Any]
) -> None:
    gateway = make_gateway(attack, params=dict(**params))
    openai_error(gateway, stream=False)


@pytest.mark.parametrize("encoding", ["br", "zstd", "x-unknown"])
def test_unsupported_content_encodings_are_502s(
    make_gateway: GatewayFactory, encoding: str
) -> None:
    gateway = make_gateway("encoding", params={"encoding": encoding})
    assert anthropic_error(gateway, stream=False).status_code == 502
    openai_error(gateway, stream=False)


def test_interim_1xx_heads_before_the_reply_are_skipped(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway("interim")
    message = gateway.anthropic().messages.create(model=MODEL, max_tokens=50, messages=MESSAGES)
    assert message.content[0].type == "text"
