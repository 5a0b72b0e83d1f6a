#!/bin/bash
# fruits-pipeline, `ec2` backend: user data of a Spark standalone node (Amazon Linux 2023).
# Rendered by fruits.clusters.ec2.user_data.render_user_data: each placeholder below stands inside single
# quotes and is replaced by a value without quotes or line breaks.
#
#   dead-man switch -> IMDSv2 -> Java, Python, job code, venv -> Spark config ->
#   primary: Spark master, waits for the workers, writes <log>/ready.json
#   worker:  Spark worker, registered with the primary's master
#
# Any failure writes <log>/failed/<role>-<instance-id>.json (the failed command and the
# tail of /var/log/fruits-node.log) and exits non-zero. No SSH: sshd is stopped; steps
# come through SSM Run Command (node.py run-steps, as the spark user).
set -euo pipefail
set -o errtrace # the ERR trap also fires in functions and $(...)

ROLE='{{role}}'
CLUSTER_ID='{{cluster_id}}'
LOG_PREFIX='{{log_prefix}}'
CODE_PREFIX='{{code_prefix}}'
MASTER_HOST='{{master_host}}'
WORKERS='{{workers}}'
READY_TIMEOUT='{{ready_timeout}}'
LIFETIME_MINUTES='{{lifetime_minutes}}'
HADOOP_AWS='{{hadoop_aws}}'
WHEELS_URI='{{wheels_uri}}' # the staged wheels of the nodes' requirements (make stage-wheels)
JARS_URI='{{jars_uri}}'     # hadoop-aws and the AWS SDK bundle; empty: from Maven
PYTHON='{{python}}'
REGION='{{region}}'
NODE_HOME='{{node_home}}' # code/, venv/ and work/ (fruits.clusters.ec2.user_data.NODE_HOME)

NODE_LOG=${FRUITS_NODE_LOG:-/var/log/fruits-node.log} # overridden only by the tests
exec > >(tee -a "$NODE_LOG") 2>&1 # cloud-init sends our output to the console too

# Dead-man switch before anything else: the instances launch with
# InstanceInitiatedShutdownBehavior=terminate, so this ends a node Airflow forgot.
shutdown -h "+$LIFETIME_MINUTES" "fruits-node: lifetime of $LIFETIME_MINUTES minutes is over"
echo "fruits-node: $ROLE of cluster $CLUSTER_ID, up to $LIFETIME_MINUTES minutes"

INSTANCE_ID=unknown
report_failure() {
    local status=$1 line=$2 command=$3
    trap - ERR
    set +e
    # in a subshell ($(...)): leave the report to the main shell, which fails next
    [ "$BASHPID" = "$$" ] || exit "$status"
    echo "fruits-node: FAILED (exit status $status) at line $line: $command"
    sleep 1 # let tee write the last lines
    tail -n 40 "$NODE_LOG" |
        FRUITS_ROLE="$ROLE" FRUITS_INSTANCE="$INSTANCE_ID" \
            FRUITS_ERROR="line $line: $command (exit status $status)" \
            python3 -c 'import json, os, sys
print(json.dumps({"role": os.environ["FRUITS_ROLE"],
                  "instance_id": os.environ["FRUITS_INSTANCE"],
                  "error": os.environ["FRUITS_ERROR"],
                  "log_tail": sys.stdin.read()}, indent=1))' |
        aws s3 cp - "${LOG_PREFIX}failed/${ROLE}-${INSTANCE_ID}.json" \
            --region "$REGION" --content-type application/json --only-show-errors
    exit "$status"
}
trap 'report_failure "$?" "$LINENO" "$BASH_COMMAND"' ERR

# IMDSv2 only: every metadata read carries a session token.
IMDS=http://169.254.169.254/latest
IMDS_TOKEN=$(curl -sSf --retry 5 --retry-connrefused -X PUT "$IMDS/api/token" \
    -H "X-aws-ec2-metadata-token-ttl-seconds: 21600")
imds() {
    curl -sSf --retry 5 --retry-connrefused -H "X-aws-ec2-metadata-token: $IMDS_TOKEN" \
        "$IMDS/meta-data/$1"
}
INSTANCE_ID=$(imds instance-id)
PRIVATE_IP=$(imds local-ipv4)
echo "fruits-node: instance $INSTANCE_ID, private IP $PRIVATE_IP"

# Nothing listens but Spark: no remote shell (SSM's agent only connects out).
systemctl disable --now sshd.service sshd.socket >/dev/null 2>&1 || true

# spark.authenticate, with a secret made for this cluster and never in the user data
# (whoever may DescribeInstanceAttribute reads that): the primary makes it and puts it
# under the cluster's log prefix (encrypted; in infra/ only the node role may read
# secret/); the workers read it from there. It goes to spark-defaults.conf alone, which
# root and the spark group read.
SECRET_URI="${LOG_PREFIX}secret/spark-authenticate"
if [ "$ROLE" = primary ]; then
    SPARK_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
    printf '%s' "$SPARK_SECRET" |
        aws s3 cp - "$SECRET_URI" --sse AES256 --region "$REGION" --only-show-errors
else
    SECRET_DEADLINE=$((SECONDS + READY_TIMEOUT))
    until SPARK_SECRET=$(aws s3 cp "$SECRET_URI" - --region "$REGION" 2>/dev/null) &&
        [ -n "$SPARK_SECRET" ]; do
        [ "$SECONDS" -lt "$SECRET_DEADLINE" ] # the primary never made one: fail, reported
        sleep 5
    done
fi

# Java, Python, the job code and its venv; everything Spark runs as the user spark.
dnf install -y -q java-17-amazon-corretto-headless "$PYTHON" "${PYTHON}-pip"
id spark >/dev/null 2>&1 ||
    useradd --system --create-home --home-dir /home/spark --shell /sbin/nologin spark
install -d -m 755 "$NODE_HOME" "$NODE_HOME/code"
install -d -o spark -g spark -m 755 "$NODE_HOME/work"
# Scratch on the root EBS volume, never /tmp (tmpfs on Amazon Linux 2023: it fills RAM):
# Spark's local dirs (shuffle, spills, blocks), s3a's upload buffers, every TMPDIR and
# java.io.tmpdir; the drivers' event logs, sent to <log>/spark-events/ by run-steps.
SCRATCH=$NODE_HOME/work/scratch
EVENTS=$NODE_HOME/work/spark-events
install -d -o spark -g spark -m 700 "$SCRATCH" "$SCRATCH/spark" "$SCRATCH/s3a" "$SCRATCH/tmp" \
    "$EVENTS"
install -d -o spark -g spark -m 700 /home/spark/.aws
printf '[default]\nregion = %s\n' "$REGION" >/home/spark/.aws/config
chown spark:spark /home/spark/.aws/config
aws s3 cp --recursive --only-show-errors --region "$REGION" "$CODE_PREFIX" "$NODE_HOME/code/"
# Offline: the venv from the staged wheels (index.json is written last by the staging),
# never from the package index; the s3a jars from the bucket when JARS_URI is set.
aws s3 cp --recursive --only-show-errors --region "$REGION" "$WHEELS_URI" "$NODE_HOME/wheels/"
test -f "$NODE_HOME/wheels/index.json" # no manifest: not staged (make stage-wheels)
VENV=$NODE_HOME/venv
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --no-cache-dir --no-index \
    --find-links "$NODE_HOME/wheels" -r "$NODE_HOME/code/node-requirements.txt"
rm -rf "$NODE_HOME/wheels"
SPARK_JARS_LINE=""
if [ -n "$JARS_URI" ]; then
    aws s3 cp --recursive --only-show-errors --region "$REGION" "$JARS_URI" "$NODE_HOME/jars/"
    JARS=$(find "$NODE_HOME/jars" -name '*.jar' | sort | paste -sd, -)
    test -n "$JARS" # FRUITS_EC2_JARS_URI holds no jar
    SPARK_JARS_LINE="spark.jars                                    $JARS"
fi

# Spark's configuration, in pyspark's default conf dir: the master, the worker and
# every spark-submit of the steps read it without any environment of their own.
SPARK_HOME=$("$VENV/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
case "$HADOOP_AWS" in
*:*) HADOOP_AWS_COORDINATE=$HADOOP_AWS ;;
*) HADOOP_AWS_COORDINATE="org.apache.hadoop:hadoop-aws:$HADOOP_AWS" ;;
esac
install -d -m 755 "$SPARK_HOME/conf"
install -m 640 -o root -g spark /dev/null "$SPARK_HOME/conf/spark-defaults.conf" # the secret
cat >"$SPARK_HOME/conf/spark-defaults.conf" <<EOF
${SPARK_JARS_LINE:-spark.jars.packages                           $HADOOP_AWS_COORDINATE}
spark.hadoop.fs.s3.impl                       org.apache.hadoop.fs.s3a.S3AFileSystem
spark.hadoop.fs.s3a.aws.credentials.provider  org.apache.hadoop.fs.s3a.auth.IAMInstanceCredentialsProvider
spark.hadoop.fs.s3a.endpoint.region           $REGION
spark.pyspark.python                          $VENV/bin/python
spark.pyspark.driver.python                   $VENV/bin/python
spark.local.dir                               $SCRATCH/spark
spark.hadoop.fs.s3a.buffer.dir                $SCRATCH/s3a
spark.driver.extraJavaOptions                 -Djava.io.tmpdir=$SCRATCH/tmp
spark.executor.extraJavaOptions               -Djava.io.tmpdir=$SCRATCH/tmp
spark.executorEnv.TMPDIR                      $SCRATCH/tmp
spark.eventLog.enabled                        true
spark.eventLog.dir                            file://$EVENTS
spark.authenticate                            true
spark.authenticate.secret                     $SPARK_SECRET
EOF
cat >"$SPARK_HOME/conf/spark-env.sh" <<EOF
export PYSPARK_PYTHON=$VENV/bin/python
export PYSPARK_DRIVER_PYTHON=$VENV/bin/python
export SPARK_LOCAL_IP=$PRIVATE_IP
export AWS_REGION=$REGION
export SPARK_LOCAL_DIRS=$SCRATCH/spark
export TMPDIR=$SCRATCH/tmp
export SPARK_DAEMON_JAVA_OPTS="-Djava.io.tmpdir=$SCRATCH/tmp"
EOF
echo "fruits-node: Spark in $SPARK_HOME, s3a connector $HADOOP_AWS_COORDINATE"

# Start this node's part of the cluster (node.py detaches the Spark daemon and returns).
NODE=(runuser -u spark -- "$VENV/bin/python" "$NODE_HOME/code/node.py")
cd "$NODE_HOME/work"
case "$ROLE" in
primary)
    "${NODE[@]}" primary --host "$PRIVATE_IP" --log-prefix "$LOG_PREFIX" \
        --workers "$WORKERS" --timeout "$READY_TIMEOUT" --cluster-id "$CLUSTER_ID" \
        --instance-id "$INSTANCE_ID" \
        --spark-home "$SPARK_HOME" --work-dir "$NODE_HOME/work"
    ;;
worker)
    "${NODE[@]}" worker --host "$PRIVATE_IP" --master "spark://$MASTER_HOST:7077" \
        --timeout "$READY_TIMEOUT" --spark-home "$SPARK_HOME" --work-dir "$NODE_HOME/work"
    ;;
*)
    echo "fruits-node: unknown role $ROLE" >&2
    false
    ;;
esac
echo "fruits-node: $ROLE of cluster $CLUSTER_ID is up"
