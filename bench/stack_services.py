"""The services the benchmark's stack (bench/stack.py) borrows: a fresh PostgreSQL database and
a Redis database claimed for the run, both on loopback."""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class StackError(RuntimeError):
    """The app could not be started; the message says which step and where its log is."""


def require_loopback(url: str, what: str) -> None:
    host = urlsplit(url).hostname
    if host not in LOOPBACK:
        raise StackError(f"{what} must be on loopback (127.0.0.1), not {host!r}: {url}")


def create_database(admin_url: str) -> tuple[str, str]:
    """CREATE a database `cxr_bench_<random>` where `admin_url` points; its name and URL."""
    import psycopg

    require_loopback(admin_url, "--pg-admin-url")
    name = f"cxr_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(admin_url)
    return name, urlunsplit((parts.scheme, parts.netloc, f"/{name}", "", ""))


def drop_database(admin_url: str, name: str) -> None:
    """DROP the database `name`, even with connections left open."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def claim_broker(broker_url: str) -> IO[str]:
    """Claim the Redis database for this run, then empty it; the lock file (closing it releases
    the claim).

    Two runs on one Redis database would flush each other's queue and run each other's
    tasks against the wrong database (seen here: a prediction that never finished). A lock
    file guards against a second run on this machine; the client list against anyone else.
    """
    import fcntl

    import redis

    client = redis.Redis.from_url(broker_url, socket_timeout=10)
    db = int(client.connection_pool.connection_kwargs.get("db", 0))
    parts = urlsplit(broker_url)
    lock_path = Path(tempfile.gettempdir()) / f"cxr-bench-redis-{parts.port or 6379}-{db}.lock"
    lock = lock_path.open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise StackError(
            f"Another benchmark run holds {lock_path} (Redis database {db}). Wait for it, or "
            f"pass --broker-url with another database, e.g. redis://127.0.0.1:6379/13."
        ) from None
    me = str(client.client_id())
    others = [
        c for c in client.client_list() if str(c.get("db")) == str(db) and str(c.get("id")) != me
    ]
    if others:
        lock.close()
        raise StackError(
            f"{len(others)} other client(s) are connected to Redis database {db} "
            f"({others[0].get('addr')}, {others[0].get('cmd')}): flushing it would break "
            f"their work. Pass --broker-url with a database nobody uses."
        )
    client.flushdb()
    client.close()
    return lock
