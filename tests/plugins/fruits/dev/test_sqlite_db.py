"""make demo and make ui give Airflow's SQLite a lock timeout a busy host does not hit."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import time

import pytest
from dag_support import ROOT

from fruits.dev.sqlite_db import CONNECT_ARGS, LOCK_TIMEOUT_S


@pytest.mark.airflow  # an `airflow` command: not the fast tier
def test_the_scripts_point_airflow_at_the_connect_args():
    shown = subprocess.run(
        ["bash", "-c", f"source {ROOT}/scripts/lib.sh && airflow config get-value "
         "database sql_alchemy_connect_args"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert shown.stdout.strip().splitlines()[-1] == "fruits.dev.sqlite_db.CONNECT_ARGS"
    assert CONNECT_ARGS["timeout"] == LOCK_TIMEOUT_S >= 30


def test_a_writer_waits_for_a_lock_held_longer_than_sqlites_default(tmp_path):
    """sqlite3's default (5 s) fails here; the connect args wait the lock out."""
    db = tmp_path / "airflow.db"
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("create table t (x)")
    holder.execute("begin exclusive")
    release = threading.Timer(6, lambda: holder.execute("commit"))
    release.start()
    try:
        writer = sqlite3.connect(db, **CONNECT_ARGS)
        start = time.monotonic()
        writer.execute("insert into t values (1)")
        writer.commit()
        assert time.monotonic() - start >= 5  # it did wait past the default
    finally:
        release.join()
        holder.close()
    assert sqlite3.connect(db).execute("select count(*) from t").fetchone() == (1,)


def savepoint_read_then_write(db, connect_args: dict) -> int:
    """What backfill creation does (SQLAlchemy, a SAVEPOINT, read, write) while another
    process commits between the read and the write; returns the rows written."""
    from sqlalchemy import create_engine, event, text
    from sqlalchemy.orm import Session

    engine = create_engine(f"sqlite:///{db}", connect_args=connect_args)
    event.listen(engine, "connect", lambda c, _: c.execute("PRAGMA journal_mode=WAL"))
    with engine.begin() as conn:
        conn.execute(text("create table t (x)"))

    def other_writer():
        other = sqlite3.connect(db, timeout=LOCK_TIMEOUT_S)
        other.execute("insert into t values ('other')")
        other.commit()
        other.close()

    with Session(engine) as session:
        with session.begin_nested():
            session.execute(text("select count(*) from t")).all()
            writer = threading.Thread(target=other_writer)
            writer.start()
            writer.join(2)  # done at once if our transaction holds no write lock
            session.execute(text("insert into t values ('ours')"))
        session.commit()
    writer.join(LOCK_TIMEOUT_S)
    with engine.connect() as conn:
        rows = conn.execute(text("select count(*) from t")).scalar_one()
    engine.dispose()
    return rows


def test_a_savepoint_transaction_waits_instead_of_failing_at_once(tmp_path):
    assert savepoint_read_then_write(tmp_path / "a.db", CONNECT_ARGS) == 2


def test_without_immediate_savepoints_the_same_race_fails(tmp_path):
    """The race above is real: a lock timeout alone does not help (SQLite refuses the
    upgrade without waiting)."""
    from sqlalchemy.exc import OperationalError

    with pytest.raises(OperationalError, match="database is locked"):
        savepoint_read_then_write(tmp_path / "b.db", {"timeout": LOCK_TIMEOUT_S})
