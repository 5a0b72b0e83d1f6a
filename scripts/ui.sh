#!/usr/bin/env bash
# `make ui`: Airflow 3 on this machine with the fruits_pipeline DAG loaded and a sample
# batch in place, so you can open the UI, fill the trigger form and run it.
#
#   - `airflow standalone` (scheduler, dag-processor, triggerer, api-server) on SQLite,
#     the api-server on 127.0.0.1:${UI_PORT:-8080},
#   - S3 is moto's server on 127.0.0.1 (a free port), the Spark cluster the DAG's
#     `local` backend, model `mobilenet` with ImageNet weights (`make weights`, offline),
#   - login `admin`, password printed below (UI_PASSWORD to choose it); local use only.
#
# Ctrl-C stops everything this script started (Airflow, moto, any local Spark cluster
# a run left behind), and nothing else.
# Settings: UI_PORT (8080), UI_PASSWORD (random), UI_DATE (today, UTC), UI_PER_LABEL (8),
# UI_HOME (var/ui: Airflow home, logs, scratch), FRUITS_INCOMING (data/incoming),
# FRUITS_IMAGE_SIZE (96), FRUITS_BUCKET (fruits-ui).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

UI_DIR="${UI_HOME:-$ROOT/var/ui}"
mkdir -p "$UI_DIR"
PORT="${UI_PORT:-8080}"
DATE="${UI_DATE:-$(date -u +%F)}"
PASSWORD="${UI_PASSWORD:-$(python -c 'import secrets; print(secrets.token_urlsafe(12))')}"

export AIRFLOW_HOME="$UI_DIR/airflow"
export AIRFLOW__API__HOST=127.0.0.1
export AIRFLOW__API__PORT="$PORT"
export AIRFLOW__API__BASE_URL="http://localhost:$PORT"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$UI_DIR/passwords.json"
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:$PORT/execution/"
export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=30
export FRUITS_BUCKET="${FRUITS_BUCKET:-fruits-ui}"
export FRUITS_IMAGE_SIZE="${FRUITS_IMAGE_SIZE:-96}"
export FRUITS_SCRATCH="$UI_DIR/scratch"
export FRUITS_POKE_INTERVAL="${FRUITS_POKE_INTERVAL:-5}"
umask 077
printf '{"admin": "%s"}\n' "$PASSWORD" >"$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"
umask 022

if python - "$PORT" <<'PY'
import socket, sys
s = socket.socket()
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
PY
then
    echo "port $PORT is taken: set UI_PORT to another one" >&2
    exit 1
fi

AIRFLOW_PID=""
shutdown() {
    trap - INT TERM EXIT
    say "Stopping (Airflow pid ${AIRFLOW_PID:-none}, moto pid ${MOTO_PID:-none})"
    if [ -n "$AIRFLOW_PID" ]; then
        # standalone's parent lingers on SIGINT; SIGTERM to its process group ends it all
        kill -TERM -- "-$AIRFLOW_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$AIRFLOW_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL -- "-$AIRFLOW_PID" 2>/dev/null || true
    fi
    python -m fruits.clusters.local.cluster stop-all "$FRUITS_SCRATCH" || true
    stop_moto
    echo "stopped"
}
trap shutdown INT TERM EXIT

start_moto "$UI_DIR"
say "S3: moto's server on $MOTO_URL (pid $MOTO_PID)"
export FRUITS_INCOMING="${FRUITS_INCOMING:-$ROOT/data/incoming}"
sample_batch "$FRUITS_INCOMING/$DATE" "${UI_PER_LABEL:-8}"

# The same environment for the CLI in another terminal (`airflow backfill create`, ...):
# this Airflow home, moto's S3, SQLite's lock handling, and never a real AWS account.
{
    export -p | grep -E '^declare -x (AIRFLOW|FRUITS_|PYTHONPATH=|PATH=|SPARK_LOCAL_IP=|TF_CPP_MIN_LOG_LEVEL=|AWS_)'
    echo "unset AWS_PROFILE AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN"
} >"$UI_DIR/cli.env"

say "Starting Airflow $(airflow version 2>/dev/null) (log: $UI_DIR/standalone.log)"
setsid airflow standalone >"$UI_DIR/standalone.log" 2>&1 &
AIRFLOW_PID=$!
if ! wait_for_url "http://127.0.0.1:$PORT/api/v2/monitor/health" 180; then
    tail -30 "$UI_DIR/standalone.log"
    exit 1
fi

cat <<EOF

  Airflow is up: http://localhost:$PORT      (user: admin, password: $PASSWORD)
  DAG fruits_pipeline, sample batch $DATE in $FRUITS_INCOMING/$DATE.
  Trigger it with "Trigger" on the DAG's page; the form has its parameters.
  The CLI on this Airflow (e.g. a backfill), in another terminal:
    source $UI_DIR/cli.env
    airflow backfill create --dag-id fruits_pipeline --from-date $DATE --to-date $DATE
  $(weights_note)
  Ctrl-C stops everything.
EOF
wait "$AIRFLOW_PID"
