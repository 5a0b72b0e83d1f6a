"""Airflow's SQLite database, as ``make demo`` and ``make ui`` run it: one file that the
scheduler, the api-server, the task processes and a user's ``airflow backfill create``
all write. sqlite3 gives up on a lock after 5 s, which a busy host exceeds; waiting
longer turns "database is locked" into a short wait. PostgreSQL (the compose stack,
production) needs none of this.

    AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS=fruits.sqlite_db.CONNECT_ARGS
"""

from __future__ import annotations

LOCK_TIMEOUT_S = 60
CONNECT_ARGS = {"timeout": LOCK_TIMEOUT_S}  # sqlite3.connect's wait for a lock, seconds
