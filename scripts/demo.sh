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
# FRUITS_IMAGE_SIZE (96), FRUITS_MODEL (mobilenetv2), FRUITS_BUCKET (fruits-demo).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$(pwd)"
DATE="${DEMO_DATE:-$(date -u +%F)}"
DEMO_DIR="$ROOT/var/demo"
mkdir -p "$DEMO_DIR"

export PATH="$ROOT/.venv/bin:$PATH"
export PYTHONPATH="$ROOT/plugins:$ROOT/spark_jobs${PYTHONPATH:+:$PYTHONPATH}"
export SPARK_LOCAL_IP=127.0.0.1
export TF_CPP_MIN_LOG_LEVEL=2
export AIRFLOW_HOME="$ROOT/var/airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$ROOT/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export FRUITS_COMPUTE=local
export FRUITS_BUCKET="${FRUITS_BUCKET:-fruits-demo}"
export FRUITS_WEIGHTS=random
export FRUITS_IMAGE_SIZE="${FRUITS_IMAGE_SIZE:-96}"
# Never a real AWS account, whatever this machine has configured.
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
export AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN

say() { printf '\n==> %s\n' "$*"; }

# --- S3: moto's server on loopback -----------------------------------------------------
PORT="$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
moto_server -H 127.0.0.1 -p "$PORT" >"$DEMO_DIR/moto.log" 2>&1 &
MOTO_PID=$!
echo "$MOTO_PID" >"$DEMO_DIR/moto.pid"
stop_moto() {
    kill "$MOTO_PID" 2>/dev/null || true
    wait "$MOTO_PID" 2>/dev/null || true
    rm -f "$DEMO_DIR/moto.pid"
}
trap stop_moto EXIT
python - "$PORT" <<'PY'
import sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/moto-api/"
for _ in range(100):
    try:
        urllib.request.urlopen(url, timeout=1).close()
        break
    except OSError:
        time.sleep(0.2)
else:
    sys.exit(f"moto's server did not start on {url}")
PY
export AIRFLOW_CONN_AWS_DEFAULT="{\"conn_type\": \"aws\", \"login\": \"moto-demo-key\",
  \"password\": \"moto-demo-secret\",
  \"extra\": {\"endpoint_url\": \"http://127.0.0.1:$PORT\", \"region_name\": \"us-east-1\"}}"
say "S3: moto's server on http://127.0.0.1:$PORT (pid $MOTO_PID; stopped when the demo ends)"

# --- Airflow metadata ------------------------------------------------------------------
say "Airflow $(airflow version 2>/dev/null) home: $AIRFLOW_HOME (SQLite)"
airflow db migrate >"$DEMO_DIR/db-migrate.log" 2>&1 || {
    tail -20 "$DEMO_DIR/db-migrate.log"
    exit 1
}

# --- a sample batch --------------------------------------------------------------------
BATCH="$ROOT/data/incoming/$DATE"
if [ -d "$BATCH" ] && [ ! -e "$BATCH/.sample-batch" ]; then
    say "Batch: $BATCH exists and is not a sample batch: processing it as it is"
else
    python -m fruits.sample_batch "$BATCH" --per-label "${DEMO_PER_LABEL:-8}" --bad >/dev/null
    touch "$BATCH/.sample-batch"
    n_files="$(find "$BATCH" -type f ! -name '.*' | wc -l)"
    say "Batch: wrote a synthetic batch to $BATCH ($n_files files, 4 of them undecodable)"
fi

cat <<EOF

  ********************************************************************************
  *  WEIGHTS: random (seeded). ImageNet weights cannot be downloaded on this      *
  *  machine, so the CNN features come from an untrained network: the pipeline   *
  *  runs end to end, but the features and the PCA mean nothing. For real        *
  *  features, stage the ImageNet file and trigger with weights=imagenet or      *
  *  weights=s3://<bucket>/.../<file>.h5 (see README, "Weights").                *
  ********************************************************************************
EOF

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
    sed 's/.*task_id=//' | paste -sd' ' - | fold -s -w 88 | sed 's/^/    /'

# --- where the results are -------------------------------------------------------------
say "Results in S3 (moto) and the run summary"
export AIRFLOW__LOGGING__LOGGING_LEVEL=WARNING  # the summary only, not the hooks' chatter
python -m fruits.summary "$DATE"
COPY="$DEMO_DIR/s3/$FRUITS_BUCKET"
python - "$DATE" "$COPY" <<'PY'
import sys
from pathlib import Path

from airflow.providers.amazon.aws.hooks.s3 import S3Hook

from fruits.config import load_settings, run_prefix

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
