#!/usr/bin/env bash
# `make demo`: the whole fruits_pipeline DAG once, on this machine, with no cloud
# account and no Docker.
#
#   - S3 is moto's server on 127.0.0.1 (a free port; stopped when this script exits),
#   - the Spark cluster is the DAG's `local` backend: a standalone master and worker
#     on 127.0.0.1, started and removed by the DAG itself,
#   - Airflow's metadata is SQLite under var/airflow,
#   - the batch is a synthetic one written to data/incoming/<today>/ (with a few
#     files that cannot be decoded, so the rejected count shows).
#
# Settings you may override: DEMO_DATE (default: today, UTC), DEMO_PER_LABEL (8),
# FRUITS_IMAGE_SIZE (96), FRUITS_MODEL (mobilenet), FRUITS_WEIGHTS (imagenet; random for
# an untrained network), FRUITS_BUCKET (fruits-demo),
# FRUITS_POKE_INTERVAL (5 s between two looks at the steps).
set -euo pipefail

source "$(dirname "$0")/lib.sh"
cd "$ROOT"
DATE="${DEMO_DATE:-$(date -u +%F)}"
DEMO_DIR="$ROOT/var/demo"
mkdir -p "$DEMO_DIR"
export FRUITS_BUCKET="${FRUITS_BUCKET:-fruits-demo}"
export FRUITS_IMAGE_SIZE="${FRUITS_IMAGE_SIZE:-96}"
export FRUITS_POKE_INTERVAL="${FRUITS_POKE_INTERVAL:-5}"

# --- S3: moto's server on loopback -----------------------------------------------------
trap stop_moto EXIT
start_moto "$DEMO_DIR"
say "S3: moto's server on $MOTO_URL (pid $MOTO_PID; stopped when the demo ends)"

# --- Airflow metadata ------------------------------------------------------------------
say "Airflow $(airflow version 2>/dev/null) home: $AIRFLOW_HOME (SQLite)"
airflow db migrate >"$DEMO_DIR/db-migrate.log" 2>&1 || {
    tail -20 "$DEMO_DIR/db-migrate.log"
    exit 1
}

# --- a sample batch --------------------------------------------------------------------
sample_batch "$ROOT/data/incoming/$DATE" "${DEMO_PER_LABEL:-8}"

say "$(weights_note)"

# --- the run -------------------------------------------------------------------------
say "Running: airflow dags test fruits_pipeline $DATE (log: $DEMO_DIR/dags-test.log)"
start=$SECONDS
if ! airflow dags test fruits_pipeline "$DATE" >"$DEMO_DIR/dags-test.log" 2>&1; then
    grep -E "ERROR|error:|Traceback|FAILED|failed" "$DEMO_DIR/dags-test.log" | tail -40 || true
    echo "The run failed; full log: $DEMO_DIR/dags-test.log" >&2
    exit 1
fi
say "The run succeeded in $((SECONDS - start))s; tasks:"
grep -oE "\[DAG TEST\] end task task_id=[a-z_]+" "$DEMO_DIR/dags-test.log" |
    sed 's/.*task_id=//' | awk '!seen[$0]++' | paste -sd' ' - | fold -s -w 88 | sed 's/^/    /'

# --- where the results are -------------------------------------------------------------
say "Results in S3 (moto) and the run summary"
export AIRFLOW__LOGGING__LOGGING_LEVEL=WARNING  # the summary only, not the hooks' chatter
python -m fruits.storage.publish "$DATE"
COPY="$DEMO_DIR/s3/$FRUITS_BUCKET"
python - "$DATE" "$COPY" <<'PY'
import sys
from pathlib import Path

from airflow.providers.amazon.aws.hooks.s3 import S3Hook

from fruits.settings import load_settings
from fruits.storage.layout import run_prefix

date, dest = sys.argv[1], Path(sys.argv[2])
prefix = run_prefix(date)
S3Hook(aws_conn_id="aws_default").sync_to_local_dir(
    bucket_name=load_settings().bucket, local_dir=dest / prefix, s3_prefix=prefix
)
PY
cat <<EOF

  moto keeps S3 in memory and stops with this demo: a copy of
  s3://$FRUITS_BUCKET/runs/batch=$DATE/ is in
  $COPY/runs/batch=$DATE/
  (report: $COPY/runs/batch=$DATE/report/report.json and *.png)
EOF
