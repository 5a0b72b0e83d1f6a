# Shared by scripts/demo.sh and scripts/ui.sh (source it): the embedded default's
# environment -- moto's S3 on loopback, Airflow on SQLite under var/, the local Spark
# backend -- and never a real AWS account, whatever this machine has configured.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

export PATH="$ROOT/.venv/bin:$PATH"
export PYTHONPATH="$ROOT/plugins:$ROOT/spark_jobs${PYTHONPATH:+:$PYTHONPATH}"
export SPARK_LOCAL_IP=127.0.0.1
export TF_CPP_MIN_LOG_LEVEL=2
export AIRFLOW_HOME="$ROOT/var/airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$ROOT/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
# SQLite: wait for a lock (a busy host, a backfill beside the scheduler) instead of failing
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS=fruits.dev.sqlite_db.CONNECT_ARGS
# Task processes ask the api-server (make ui) to start and end them; on a busy host an
# answer can take longer than the 5 s default, and the api-server can come up after the
# scheduler's first tasks (Airflow's advice for high load: raise the timeout)
export AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT=60
export AIRFLOW__WORKERS__EXECUTION_API_RETRIES=10
export FRUITS_COMPUTE=local
# real ImageNet features (MobileNet v1, staged offline by `make weights`); random on request
export FRUITS_MODEL="${FRUITS_MODEL:-mobilenet}"
export FRUITS_WEIGHTS="${FRUITS_WEIGHTS:-imagenet}"
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
export AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN

say() { printf '\n==> %s\n' "$*"; }

free_port() {
    python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_url() {  # wait_for_url URL SECONDS
    python - "$1" "${2:-30}" <<'PY'
import sys, time, urllib.error, urllib.request
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        urllib.request.urlopen(url, timeout=2).close()
        sys.exit(0)
    except urllib.error.HTTPError:
        sys.exit(0)  # it answers: up
    except OSError:
        time.sleep(0.3)
sys.exit(f"nothing answered on {url}")
PY
}

# start_moto LOGDIR: moto's S3/EMR server on 127.0.0.1 (free port); sets MOTO_PID and
# AIRFLOW_CONN_AWS_DEFAULT. The caller stops it with stop_moto (e.g. in an EXIT trap).
start_moto() {
    local logdir="$1" port
    port="$(free_port)"
    moto_server -H 127.0.0.1 -p "$port" >"$logdir/moto.log" 2>&1 &
    MOTO_PID=$!
    wait_for_url "http://127.0.0.1:$port/moto-api/" 30
    export AIRFLOW_CONN_AWS_DEFAULT="{\"conn_type\": \"aws\", \"login\": \"moto-local-key\",
      \"password\": \"moto-local-secret\",
      \"extra\": {\"endpoint_url\": \"http://127.0.0.1:$port\", \"region_name\": \"us-east-1\"}}"
    MOTO_URL="http://127.0.0.1:$port"
}

stop_moto() {
    if [ -n "${MOTO_PID:-}" ]; then
        kill "$MOTO_PID" 2>/dev/null || true
        wait "$MOTO_PID" 2>/dev/null || true
        MOTO_PID=""
    fi
}

# sample_batch DIR [PER_LABEL]: a synthetic batch with 4 undecodable files, unless DIR
# already holds a batch that is not ours (then it is used as it is).
sample_batch() {
    local dir="$1" per_label="${2:-8}"
    if [ -d "$dir" ] && [ ! -e "$dir/.sample-batch" ]; then
        say "Batch: $dir exists and is not a sample batch: using it as it is"
        return
    fi
    python -m fruits.dev.sample_batch "$dir" --per-label "$per_label" --bad >/dev/null
    touch "$dir/.sample-batch"
    say "Batch: wrote a synthetic batch to $dir ($(find "$dir" -type f ! -name '.*' | wc -l) files, 4 of them undecodable)"
}

# weights_note: what the features mean, for the banner of the demo and the UI
weights_note() {
    if [ "$FRUITS_WEIGHTS" = random ]; then
        echo "Weights: random (seeded), as asked: the features and the PCA mean nothing."
    else
        echo "Weights: $FRUITS_WEIGHTS for $FRUITS_MODEL (MobileNet v1's ImageNet weights come from 'make weights', offline)."
    fi
}
