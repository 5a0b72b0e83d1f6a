#!/bin/bash
# EMR bootstrap action: runs on every node before Spark starts.
#
#   bootstrap.sh s3://<bucket>/code/<version>/requirements.txt [/usr/bin/python3.11]
#
# EMR 7.x (Amazon Linux 2023) ships Spark 3.5 with an older system Python. This
# installs python3.11 and the jobs' pinned requirements (never pyspark: EMR brings
# its own Spark); the job flow's spark-env classification points PYSPARK_PYTHON and
# PYSPARK_DRIVER_PYTHON at that interpreter.
set -euo pipefail

REQUIREMENTS_URI="${1:?usage: bootstrap.sh s3://.../requirements.txt [python]}"
PYTHON="${2:-/usr/bin/python3.11}"

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    sudo dnf install -y -q python3.11 python3.11-pip python3.11-devel
fi
"$PYTHON" -m pip --version >/dev/null 2>&1 || sudo dnf install -y -q python3.11-pip

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
aws s3 cp --only-show-errors "$REQUIREMENTS_URI" "$tmp/requirements.txt"
if grep -qi '^pyspark' "$tmp/requirements.txt"; then
    echo "bootstrap: refusing to install pyspark over EMR's Spark" >&2
    exit 1
fi
sudo "$PYTHON" -m pip install --quiet --no-cache-dir --upgrade pip
sudo "$PYTHON" -m pip install --quiet --no-cache-dir -r "$tmp/requirements.txt"
"$PYTHON" - <<'PY'
import h5py, keras, numpy, pandas, PIL, pyarrow, tensorflow
print("bootstrap: python", __import__("sys").version.split()[0], "tensorflow", tensorflow.__version__,
      "keras", keras.__version__, "pandas", pandas.__version__, "pyarrow", pyarrow.__version__)
PY
