"""What the spark-submit tests share: where the jobs live and the environment they run in."""

from __future__ import annotations

import sys
from pathlib import Path

from fruits.clusters.local.sparkenv import spark_env

ROOT = Path(__file__).resolve().parents[2]
JOBS = ROOT / "spark_jobs"
BIN = Path(sys.executable).parent


def spark_submit_env() -> dict[str, str]:
    """The venv's spark-submit and Python on loopback; job code only via --py-files."""
    return spark_env()
