"""Gateway keys: the CLI as users run it, hashing, constant-time checks, the cache."""

from __future__ import annotations

import hmac
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dbs import postgres_schema, postgres_url_or_skip, settings_for
from tierwise.config import Settings
from tierwise.errors import InputError
from tierwise.keys import KeyStore, KeysUnavailable, hash_key

TIERWISE = str(Path(sys.executable).parent / "tierwise")


def tw(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIERWISE_", "ANTHROPIC_"))}
    env |= {"TIERWISE_HOME": str(home), "COLUMNS": "150"}
    return subprocess.run(
        [TIERWISE, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    created = tw(tmp_path, "keys", "create", "--name", "ci-bot", "--budget-usd", "2.50",
                 "--period", "day")  # fmt: skip
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert re.fullmatch(r"tw-[A-Za-z0-9_-]{43}", key)  # 32 random bytes, URL-safe base64
    assert "cannot be shown again" in created.stderr
    # Only the hash is stored: the key appears nowhere in the database files.
    for f in tmp_path.glob("tierwise.db*"):
        assert key.encode() not in f.read_bytes()

    listed = tw(tmp_path, "keys", "list")
    assert "ci-bot" in listed.stdout and "$2.50" in listed.stdout and key not in listed.stdout

    store = KeyStore(settings_for(tmp_path))
    try:
        info = store.authenticate(key)
        assert info is not None and info.name == "ci-bot" and str(info.budget_usd) == "2.50"
        assert info.period == "day" and store.any_keys()
        assert store.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
        assert store.authenticate("") is None and store.authenticate(None) is None
    finally:
        store.close()

    again = tw(tmp_path, "keys", "create", "--name", "ci-bot")
    assert again.returncode == 2 and "exists" in again.stderr
    assert tw(tmp_path, "keys", "revoke", "ci-bot").returncode == 0
    assert tw(tmp_path, "keys", "revoke", "ci-bot").returncode == 2
    assert "ci-bot" not in tw(tmp_path, "keys", "list").stdout
    assert "ci-bot" in tw(tmp_path, "keys", "list", "--all").stdout
    store = KeyStore(settings_for(tmp_path))
    try:
        # Revoked, yet keys stay required: the last revocation does not open the gateway.
        assert store.authenticate(key) is None and store.any_keys()
        assert store.live_keys() == 0
    finally:
        store.close()
    # A revoked name can be given to a new key.
    assert tw(tmp_path, "keys", "create", "--name", "ci-bot").returncode == 0
    bad = tw(tmp_path, "keys", "create", "--name", "x", "--budget-usd", "-1")
    assert bad.returncode == 2 and "budget" in bad.stderr


def test_admin_keys_from_the_cli(tmp_path: Path) -> None:
    admin = tw(tmp_path, "keys", "create", "--name", "ops", "--admin")
    user = tw(tmp_path, "keys", "create", "--name", "app")
    assert admin.returncode == 0 and user.returncode == 0, admin.stderr + user.stderr
    assert "created admin key 'ops'" in admin.stderr and "created user key 'app'" in user.stderr
    listed = tw(tmp_path, "keys", "list", "--json")
    roles = {row["name"]: row["role"] for row in json.loads(listed.stdout)}
    assert roles == {"ops": "admin", "app": "user"}
    table = tw(tmp_path, "keys", "list").stdout
    assert "role" in table and "admin" in table
    store = KeyStore(settings_for(tmp_path))
    try:
        found = store.authenticate(admin.stdout.strip())
        assert found is not None and found.admin and found.role == "admin"
        plain = store.authenticate(user.stdout.strip())
        assert plain is not None and not plain.admin
        with pytest.raises(InputError, match="role"):
            store.create("x", role="root")
    finally:
        store.close()


def test_closed_stays_closed_and_an_unreadable_table_fails_closed(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    now = [0.0]
    store = KeyStore(settings, clock=lambda: now[0])
    try:
        assert not store.any_keys()  # a new database: open
        raw, _ = store.create("only")
        assert store.any_keys() and store.authenticate(raw) is not None
        assert store.revoke("only")
        assert store.any_keys() and store.authenticate(raw) is None
        # The database file deleted under the running gateway: refused, not open, not stale.
        for f in tmp_path.glob("tierwise.db*"):
            f.unlink()
        now[0] += settings.keys.cache_ttl_s
        with pytest.raises(KeysUnavailable, match="deleted"):
            store.any_keys()
        with pytest.raises(KeysUnavailable):  # without asking again within the retry delay
            store.authenticate(raw)
        # A new, empty database at the same path: still closed in this process.
        fresh = KeyStore(settings)
        fresh.close()
        store.store.db.reconnect()  # what a ledger that reopens its file would do
        now[0] += 2
        assert store.any_keys() and store.live_keys() == 0
    finally:
        store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def keystore_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    if request.param == "sqlite":
        yield settings_for(tmp_path)
        return
    with postgres_schema(postgres_url_or_skip()) as url:
        yield settings_for(tmp_path, url)


def test_authenticate_uses_compare_digest_and_the_cache(
    keystore_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [0.0]
    store = KeyStore(keystore_settings, clock=lambda: now[0])
    try:
        raw, _ = store.create("svc", budget_usd="10", period="month")
        calls: list[tuple[str, str]] = []
        real = hmac.compare_digest

        def spy(a: str, b: str) -> bool:
            calls.append((a, b))
            return real(a, b)

        monkeypatch.setattr(hmac, "compare_digest", spy)
        queries = 0
        real_query = store.store.db.query

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal queries
            queries += 1
            return real_query(*args, **kwargs)

        monkeypatch.setattr(store.store.db, "query", counting)
        assert store.authenticate(raw) is not None  # loads the table once
        for _ in range(100):
            assert store.authenticate(raw) is not None
            assert store.authenticate("tw-wrong") is None
        assert queries == 1  # within the TTL the database is not asked again
        assert calls and all(a == b == hash_key(raw) for a, b in calls)
        # Revoked elsewhere (another process): seen once the TTL has passed.
        other = KeyStore(keystore_settings)
        assert other.revoke("svc")
        other.close()
        assert store.authenticate(raw) is not None
        now[0] += keystore_settings.keys.cache_ttl_s
        assert store.authenticate(raw) is None
        with pytest.raises(InputError):
            store.create("bad name!")
    finally:
        store.close()
