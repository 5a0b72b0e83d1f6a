"""What the spark-submit tests share: where the jobs live and the environment they run in."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
JOBS = ROOT / "spark_jobs"
BIN = Path(sys.executable).parent


def spark_submit_env() -> dict[str, str]:
    """The venv's spark-submit and Python on loopback; job code only via --py-files."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env['PATH']}",
        SPARK_LOCAL_IP="127.0.0.1",
        PYSPARK_PYTHON=sys.executable,
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    return env
