"""Airflow's SQLite database, as ``make demo`` and ``make ui`` run it: one file that the
scheduler, the api-server, the task processes and a user's ``airflow backfill create``
all write. PostgreSQL (the compose stack, production) needs none of this.

Two ways SQLite says "database is locked" on a busy host, and what this module does:

- a writer waits for another writer longer than sqlite3's 5 s: wait up to 60 s instead;
- a transaction that SQLAlchemy opens with a SAVEPOINT (``session.begin_nested()``,
  e.g. in backfill creation) starts deferred, reads, then writes; if another process
  committed in between, SQLite refuses the upgrade at once, without waiting (WAL's
  "busy snapshot"). Such transactions start with ``BEGIN IMMEDIATE`` here, so they take
  the write lock first and wait for it like any writer.

    AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS=fruits.dev.sqlite_db.CONNECT_ARGS
"""

from __future__ import annotations

import sqlite3

LOCK_TIMEOUT_S = 60


class SavepointCursor(sqlite3.Cursor):
    """Begins a write transaction before a SAVEPOINT that would open one deferred."""

    def execute(self, sql: str, parameters=(), /):  # type: ignore[override]
        if not self.connection.in_transaction and sql.lstrip()[:9].upper() == "SAVEPOINT":
            super().execute("BEGIN IMMEDIATE")
        return super().execute(sql, parameters)


class ImmediateSavepoints(sqlite3.Connection):
    """sqlite3's connection whose cursors are :class:`SavepointCursor`."""

    def cursor(self, factory=SavepointCursor):  # type: ignore[override]
        return super().cursor(factory)


# sqlite3.connect's keyword arguments: the wait for a lock (seconds), the connection class
CONNECT_ARGS = {"timeout": LOCK_TIMEOUT_S, "factory": ImmediateSavepoints}
