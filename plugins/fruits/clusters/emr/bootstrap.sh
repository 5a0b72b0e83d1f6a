#!/bin/bash
# EMR bootstrap action: runs on every node before Spark starts.
#
#   bootstrap.sh s3://<bucket>/code/<version>/requirements.txt [/usr/bin/python3.11] \
#       [s3://<bucket>/wheels/<requirements hash>/<arch>/]
#
# EMR 7.x (Amazon Linux 2023) ships Spark 3.5 with an older system Python. This
# installs python3.11 and the jobs' pinned requirements (never pyspark: EMR brings
# its own Spark); the job flow's spark-env classification points PYSPARK_PYTHON and
# PYSPARK_DRIVER_PYTHON at that interpreter.
#
# Offline: the requirements come from the wheels `make stage-wheels` staged in the
# bucket (pip install --no-index --find-links), so a node needs S3 only (a private
# subnet with an S3 gateway endpoint), never the package index. python3.11 itself
# comes from the release's own dnf repositories (reached through S3 as well).
set -euo pipefail

REQUIREMENTS_URI="${1:?usage: bootstrap.sh s3://.../requirements.txt [python] [s3://.../wheels/<hash>/<arch>/]}"
PYTHON="${2:-/usr/bin/python3.11}"
WHEELS_URI="${3:?usage: bootstrap.sh s3://.../requirements.txt python s3://.../wheels/<hash>/<arch>/}"

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    sudo dnf install -y -q python3.11 python3.11-pip
fi
"$PYTHON" -m pip --version >/dev/null 2>&1 || sudo dnf install -y -q python3.11-pip

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
aws s3 cp --only-show-errors "$REQUIREMENTS_URI" "$tmp/requirements.txt"
if grep -qi '^pyspark' "$tmp/requirements.txt"; then
    echo "bootstrap: refusing to install pyspark over EMR's Spark" >&2
    exit 1
fi
aws s3 cp --recursive --only-show-errors "$WHEELS_URI" "$tmp/wheels/"
if [ ! -f "$tmp/wheels/index.json" ]; then
    echo "bootstrap: no staged wheels at $WHEELS_URI (index.json missing): make stage-wheels" >&2
    exit 1
fi
sudo "$PYTHON" -m pip install --quiet --no-cache-dir --no-index --find-links "$tmp/wheels" \
    -r "$tmp/requirements.txt"
"$PYTHON" - <<'PY'
import sys
import numpy, pandas, PIL, pyarrow
from ai_edge_litert.interpreter import Interpreter  # the CNN's runtime: no TensorFlow
print("bootstrap: python", sys.version.split()[0], "numpy", numpy.__version__,
      "pandas", pandas.__version__, "pyarrow", pyarrow.__version__, "pillow", PIL.__version__)
assert "tensorflow" not in sys.modules, "the nodes must not import TensorFlow"
PY
