"""make demo and make ui give Airflow's SQLite a lock timeout a busy host does not hit."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import time

import pytest
from dag_support import ROOT

from fruits.sqlite_db import CONNECT_ARGS, LOCK_TIMEOUT_S


@pytest.mark.airflow  # an `airflow` command: not the fast tier
def test_the_scripts_point_airflow_at_the_connect_args():
    shown = subprocess.run(
        ["bash", "-c", f"source {ROOT}/scripts/lib.sh && airflow config get-value "
         "database sql_alchemy_connect_args"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert shown.stdout.strip().splitlines()[-1] == "fruits.sqlite_db.CONNECT_ARGS"
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
