"""Gateway keys: created once, stored hashed, checked in constant time, cached in memory.

A key is ``tw-`` followed by 32 random bytes, URL-safe base64 (``secrets.token_urlsafe``):
256 bits of entropy. It is shown once, at creation; the database keeps its SHA-256 and a short
prefix for display (``tw-AbCdEfG``), in ``api_keys`` (the ledger's database, migration 2).

Why SHA-256 and no slow KDF (bcrypt, scrypt, argon2): a slow hash protects *low-entropy*
secrets (passwords) against guessing after a database leak. A 256-bit random key cannot be
guessed, so one fast hash is as strong, and it keeps authentication at microseconds on every
request.

Constant time: :meth:`KeyStore.authenticate` finds the candidate by the SHA-256 of the
presented key (timing can only tell an attacker about hashes of keys they chose, which
preimage resistance makes worthless) and then confirms with :func:`hmac.compare_digest`.

Not on the hot path: the key table is read into memory and re-read at most every
``keys.cache_ttl_s`` seconds (default 5), so a revoked key stops working within that time, and
unknown keys never reach the database.

**Closed once, closed for good.** :meth:`KeyStore.any_keys` is true as soon as any key was ever
created, revoked ones included, and stays true in a running process even if the table later
reads empty (a replaced database file): revoking the last key leaves a gateway that accepts
nothing, never an open one. When the table cannot be read (the database failing, its file
deleted) every call raises :class:`KeysUnavailable`, and the gateway answers 503: it fails
closed, never open.

**Roles** (migration 5): ``user`` keys see their own requests on the dashboard; ``admin`` keys
(``tierwise keys create --admin``) see every key's and read ``/metrics``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from tierwise.errors import InputError, TierwiseError
from tierwise.ledger.db import to_decimal

if TYPE_CHECKING:
    from tierwise.config import Settings
    from tierwise.ledger.store import LedgerStore

log = logging.getLogger("tierwise.keys")

KEY_PREFIX = "tw-"
PERIODS = ("day", "month", "total")
ROLES = ("user", "admin")
#: after a failed read of the key table, how long callers get the same error without the
#: database being asked again (a failing database is not hammered by every request)
RETRY_AFTER_FAILURE_S = 1.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_SHOWN = 10  # characters of the key kept for display: "tw-" + 7


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A gateway key as the gateway and the budgets see it (never the key itself)."""

    name: str
    key_prefix: str
    budget_usd: Decimal | None
    period: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None = None
    role: str = "user"

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def admin(self) -> bool:
        return self.role == "admin"


class KeysUnavailable(TierwiseError):
    """The key table cannot be read: the gateway refuses every request (fails closed)."""


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def parse_budget(value: str | Decimal | None) -> Decimal | None:
    if value is None:
        return None
    try:
        budget = Decimal(str(value))
    except InvalidOperation as exc:
        raise InputError(f"--budget-usd {value!r} is not a number") from exc
    if not budget.is_finite() or budget <= 0:
        raise InputError(f"--budget-usd must be a positive amount of USD, got {value!r}")
    return budget


class KeyStore:
    """The key table, with an in-memory snapshot for :meth:`authenticate`."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: LedgerStore | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if store is None:
            from tierwise.ledger import open_store

            store = open_store(settings)
            self._owns_store = True
        else:
            self._owns_store = False
        self.store = store
        self.cache_ttl_s = settings.keys.cache_ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._by_hash: dict[str, tuple[str, KeyInfo]] = {}
        self._loaded_at: float | None = None
        self._ever = False  # a key was seen once: authentication stays required
        self._failure: KeysUnavailable | None = None
        self._failed_at = 0.0
        self._file: tuple[object, tuple[int, int]] | None = None  # (connection, (dev, inode))

    def close(self) -> None:
        if self._owns_store:
            self.store.close()

    # -- the gateway's calls ------------------------------------------------------------
    def authenticate(self, raw_key: str | None) -> KeyInfo | None:
        """The live key matching ``raw_key``, or None. Microseconds; no DB on a cache hit.
        Raises :class:`KeysUnavailable` when the table cannot be read."""
        snapshot = self._snapshot()
        if not raw_key or len(raw_key) > 512:
            return None
        digest = hash_key(raw_key)
        found = snapshot.get(digest)
        if found is None:
            return None
        stored_hash, info = found
        return info if hmac.compare_digest(stored_hash, digest) else None

    def any_keys(self) -> bool:
        """Whether every request needs a key: true once any key was ever created (revoked
        ones count), and never false again in this process. Raises :class:`KeysUnavailable`
        when the table cannot be read (the caller refuses the request: fails closed)."""
        self._snapshot()
        return self._ever

    def live_keys(self) -> int:
        """How many keys can authenticate now."""
        return len(self._snapshot())

    def live_key(self, name: str) -> tuple[str, KeyInfo] | None:
        """(stored SHA-256, info) of the live key called ``name``, or None. The hash is the
        secret that signs the key's dashboard sessions: revoking the key ends them."""
        for digest, info in self._snapshot().values():
            if info.name == name:
                return digest, info
        return None

    def refresh(self) -> None:
        """Re-read the key table now (the CLI's changes are otherwise seen within the TTL).
        Raises :class:`KeysUnavailable` when it cannot be read."""
        try:
            self._check_file()
            db = self.store.db
            rows = db.query(
                "SELECT key_hash, name, key_prefix, budget_usd, period, created_at, revoked_at, "
                "role FROM api_keys WHERE revoked_at IS NULL"
            )
            ever = bool(rows) or bool(db.query("SELECT 1 FROM api_keys LIMIT 1"))
            snapshot = {str(r[0]): (str(r[0]), self._info(r[1:])) for r in rows}
        except KeysUnavailable as exc:
            self._failed(exc)
            raise
        except Exception as exc:  # any database error: refuse requests, loudly (see _failed)
            failure = KeysUnavailable(
                "the gateway key table cannot be read "
                f"({type(exc).__name__}: {str(exc).strip()[:200]}); refusing every request "
                "until it can"
            )
            self._failed(failure)
            raise failure from exc
        with self._lock:
            self._by_hash = snapshot
            self._ever = self._ever or ever
            self._loaded_at = self._clock()
            if self._failure is not None:
                log.warning("the gateway key table can be read again")
            self._failure = None

    def _failed(self, exc: KeysUnavailable) -> None:
        with self._lock:
            if self._failure is None:
                log.error("%s", exc)
            self._failure = exc
            self._failed_at = self._clock()
            self._loaded_at = None

    def _check_file(self) -> None:
        """SQLite: the file the connection reads must still be the database's path. A
        deleted file stays readable through the open connection (stale keys, a revocation
        made by the CLI in a new file never seen), so that is refused as unreadable."""
        db = self.store.db
        path = getattr(db, "path", None)
        if path is None:
            return
        try:
            st = os.stat(path)
        except FileNotFoundError as exc:
            raise KeysUnavailable(
                f"the gateway key table cannot be read: the database file {path} was deleted "
                "while the gateway runs; refusing every request (restart the gateway)"
            ) from exc
        identity = (st.st_dev, st.st_ino)
        connection = getattr(db, "_conn", None)  # reopened (reconnect) → a new baseline
        if self._file is None or self._file[0] is not connection:
            self._file = (connection, identity)
        elif self._file[1] != identity:
            raise KeysUnavailable(
                f"the gateway key table cannot be read: the database file {path} was replaced "
                "while the gateway runs; refusing every request (restart the gateway)"
            )

    def _snapshot(self) -> dict[str, tuple[str, KeyInfo]]:
        failure = self._failure
        if failure is not None and self._clock() - self._failed_at < RETRY_AFTER_FAILURE_S:
            raise failure
        loaded = self._loaded_at
        if loaded is None or self._clock() - loaded >= self.cache_ttl_s:
            self.refresh()
        return self._by_hash

    def _info(self, r: tuple[Any, ...]) -> KeyInfo:
        name, prefix, budget, period, created, revoked, role = r
        db = self.store.db
        return KeyInfo(
            name=str(name),
            key_prefix=str(prefix),
            budget_usd=to_decimal(budget),
            period=str(period),
            created_at=db.ts_value(created),
            revoked_at=None if revoked is None else db.ts_value(revoked),
            role=str(role),
        )

    # -- administration (the CLI) -------------------------------------------------------
    def create(
        self,
        name: str,
        *,
        budget_usd: str | Decimal | None = None,
        period: str = "month",
        role: str = "user",
    ) -> tuple[str, KeyInfo]:
        """Make a key; returns (the key, shown only now, its info)."""
        if not _NAME.match(name or ""):
            raise InputError(
                f"key name {name!r}: use 1-64 letters, digits, '_', '-', '.', '@' "
                "(starting with a letter or digit)"
            )
        if period not in PERIODS:
            raise InputError(f"--period {period!r}: choose one of {', '.join(PERIODS)}")
        if role not in ROLES:
            raise InputError(f"key role {role!r}: choose one of {', '.join(ROLES)}")
        budget = parse_budget(budget_usd)
        raw = new_key()
        now = dt.datetime.now(dt.UTC)
        db = self.store.db
        try:
            with db.transaction():
                if db.query(
                    "SELECT 1 FROM api_keys WHERE name = ? AND revoked_at IS NULL", (name,)
                ):
                    raise InputError(f"a live key named {name!r} exists; revoke it first")
                db.execute(
                    "INSERT INTO api_keys (name, key_hash, key_prefix, budget_usd, period, "
                    "created_at, role) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        name,
                        hash_key(raw),
                        raw[:_SHOWN],
                        db.money_param(budget),
                        period,
                        db.ts_param(now),
                        role,
                    ),
                )
        except InputError:
            raise
        except Exception as exc:  # the unique index caught a concurrent create
            if self._live(name):
                raise InputError(f"a live key named {name!r} exists; revoke it first") from exc
            raise
        self._loaded_at = None
        return raw, KeyInfo(name, raw[:_SHOWN], budget, period, now, role=role)

    def _live(self, name: str) -> bool:
        return bool(
            self.store.db.query(
                "SELECT 1 FROM api_keys WHERE name = ? AND revoked_at IS NULL", (name,)
            )
        )

    def list(self, *, include_revoked: bool = False) -> list[KeyInfo]:
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        rows = self.store.db.query(
            "SELECT name, key_prefix, budget_usd, period, created_at, revoked_at, role "  # noqa: S608
            f"FROM api_keys{where} ORDER BY name, created_at"
        )
        return [self._info(r) for r in rows]

    def revoke(self, name: str) -> bool:
        """Revoke the live key called ``name``; False when there is none."""
        db = self.store.db
        with db.transaction():
            if not db.query(
                "SELECT 1 FROM api_keys WHERE name = ? AND revoked_at IS NULL", (name,)
            ):
                return False
            db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (db.ts_param(dt.datetime.now(dt.UTC)), name),
            )
        self._loaded_at = None
        return True
