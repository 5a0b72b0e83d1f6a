"""The Spark side of an ``ec2`` node: scratch on the EBS volume, executors sized from the
node, Spark's event logs and the steps' output sent to the log prefix (new bytes only),
and ``spark.authenticate`` with a secret made per cluster and never in the user data.

The node modules run as the node runs them (their folder on ``sys.path``, a subprocess
for ``run-steps``), against moto's S3 on loopback and a real ``spark-submit``."""

from __future__ import annotations

import http.server
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from dag_support import BUCKET, REGION

from fruits.clusters.ec2 import user_data as ec2

PYTHON = sys.executable
CLUSTER_ID = "ec2-test-0002"
LOG = f"s3://{BUCKET}/logs/ec2/{CLUSTER_ID}/"
LOG_KEY = f"logs/ec2/{CLUSTER_ID}/"


@pytest.fixture(scope="module")
def code(tmp_path_factory) -> Path:
    """The node program's files side by side, as the code bundle ships them."""
    folder = tmp_path_factory.mktemp("code")
    for path in ec2.node_program():
        shutil.copy(path, folder)
    return folder


@pytest.fixture
def node_modules(code, monkeypatch):
    """Import the node's modules as the node does: by their own names, from one folder."""
    monkeypatch.syspath_prepend(str(code))
    names = [p.stem for p in code.glob("*.py")]
    for name in names:
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield {name: importlib.import_module(name) for name in ("node_steps", "node_daemons")}
    for name in names:
        sys.modules.pop(name, None)


def values(**changes) -> dict[str, object]:
    base: dict[str, object] = {
        "role": "primary",
        "cluster_id": CLUSTER_ID,
        "log_prefix": LOG,
        "code_prefix": f"s3://{BUCKET}/code/20261124-abc/",
        "master_host": "",
        "workers": 2,
        "ready_timeout": 1200,
        "lifetime_minutes": 240,
        "hadoop_aws": "org.apache.hadoop:hadoop-aws:3.5.0",
        "python": "python3.11",
        "region": REGION,
    }
    template = ec2.USER_DATA_TEMPLATE.read_text()
    for name in set(re.findall(r"\{\{(\w+)\}\}", template)) - set(base) - {"node_home"}:
        # placeholders other parts of the node own (wheels, jars...): a value that passes
        base[name] = {"wheels_uri": f"s3://{BUCKET}/wheels/25eb1ce0b6645ef3/x86_64/"}.get(name, "")
    base.update(changes)
    return base


def conf_lines(script: str, heredoc: str) -> dict[str, str]:
    """The ``key value`` lines the script writes into ``heredoc`` (spark-defaults.conf)."""
    m = re.search(
        rf'cat >"\$SPARK_HOME/conf/{re.escape(heredoc)}" <<EOF\n(.*?)\nEOF\n', script, re.S
    )
    assert m, f"no heredoc for {heredoc}"
    return dict(re.split(r"\s+", line.strip(), maxsplit=1) for line in m.group(1).splitlines())


# --- scratch, event logs, secret: what the user data writes ----------------------------


def test_spark_scratch_and_tmp_are_on_the_ebs_volume_not_tmpfs():
    script = ec2.render_user_data(values())
    defaults = conf_lines(script, "spark-defaults.conf")
    assert defaults["spark.local.dir"] == "$SCRATCH/spark"
    assert defaults["spark.hadoop.fs.s3a.buffer.dir"] == "$SCRATCH/s3a"
    assert defaults["spark.executorEnv.TMPDIR"] == "$SCRATCH/tmp"
    for side in ("driver", "executor"):
        assert defaults[f"spark.{side}.extraJavaOptions"] == "-Djava.io.tmpdir=$SCRATCH/tmp"
    env = conf_lines(script, "spark-env.sh")
    assert env["export"]  # the heredoc parsed; check the exports themselves:
    assert "export SPARK_LOCAL_DIRS=$SCRATCH/spark\n" in script
    assert "export TMPDIR=$SCRATCH/tmp\n" in script
    assert 'export SPARK_DAEMON_JAVA_OPTS="-Djava.io.tmpdir=$SCRATCH/tmp"' in script
    assert "SCRATCH=$NODE_HOME/work/scratch\n" in script  # the root volume, not /tmp
    made = re.search(
        r'install -d -o spark -g spark -m 700 "\$SCRATCH" (.*?)\n\s+"\$EVENTS"', script
    )
    assert made and '"$SCRATCH/tmp"' in made.group(1) and '"$SCRATCH/s3a"' in made.group(1)
    assert "/tmp" not in "".join(v for v in defaults.values() if "SCRATCH" not in v)


def test_event_logs_are_on_and_local_for_run_steps_to_send():
    defaults = conf_lines(ec2.render_user_data(values()), "spark-defaults.conf")
    assert defaults["spark.eventLog.enabled"] == "true"
    assert defaults["spark.eventLog.dir"] == "file://$EVENTS"


def test_spark_authenticate_secret_is_made_on_the_primary_never_in_the_user_data():
    for role in ("primary", "worker"):
        extra = {"master_host": "10.0.1.23"} if role == "worker" else {}
        script = ec2.render_user_data(values(role=role, **extra))
        defaults = conf_lines(script, "spark-defaults.conf")
        assert defaults["spark.authenticate"] == "true"
        assert defaults["spark.authenticate.secret"] == "$SPARK_SECRET"
        assert not re.search(r"[0-9a-f]{32}", script)  # no secret in the user data itself
        assert 'SECRET_URI="${LOG_PREFIX}secret/spark-authenticate"' in script
        # the file that holds it: root and the spark group only, made before it is written
        made = script.index('install -m 640 -o root -g spark /dev/null "$SPARK_HOME/conf/spark-')
        assert made < script.index('cat >"$SPARK_HOME/conf/spark-defaults.conf"')


def _stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


def _run_user_data(tmp_path: Path, role: str, aws_body: str, **changes) -> tuple[int, list[str]]:
    """The rendered user data with stubs: IMDS answers, ``aws`` does ``aws_body``, and
    the first command that needs root (``dnf``) fails, so the script stops there."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    calls = tmp_path / "calls"
    _stub(bin_dir, "shutdown", f'echo "shutdown $*" >>{calls}\n')
    _stub(
        bin_dir,
        "curl",
        'case "$*" in\n*api/token*) echo T ;;\n*instance-id*) echo i-0fruit ;;\n'
        "*local-ipv4*) echo 10.0.1.9 ;;\nesac\n",
    )
    _stub(bin_dir, "aws", f'echo "aws $*" >>{calls}\n{aws_body}')
    _stub(bin_dir, "dnf", f'echo "dnf $*" >>{calls}\nexit 1\n')
    _stub(bin_dir, "systemctl", "")
    extra = {"master_host": "10.0.1.23"} if role == "worker" else {}
    script = tmp_path / "node.sh"
    script.write_text(ec2.render_user_data(values(role=role, **extra, **changes)))
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FRUITS_NODE_LOG": str(tmp_path / "node.log"),
        "HOME": str(tmp_path),
        "STUBS": str(tmp_path),
    }
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, timeout=120)
    return done.returncode, calls.read_text().splitlines()


def test_the_primary_puts_a_fresh_secret_under_its_log_prefix_before_installing(tmp_path):
    aws_body = 'case "$*" in *secret/spark-authenticate*) cat >>"$STUBS/secret" ;; esac\n'
    code, calls = _run_user_data(tmp_path / "a", "primary", aws_body)
    assert code != 0  # dnf failed on purpose
    upload = f"aws s3 cp - {LOG}secret/spark-authenticate --sse AES256 --region {REGION}"
    assert calls[1].startswith(upload), calls
    assert calls[2].startswith("dnf install")  # the secret is there before the installs
    first = (tmp_path / "a" / "secret").read_text()
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert first not in (tmp_path / "a" / "node.log").read_text()  # nor in the node's log
    _run_user_data(tmp_path / "b", "primary", aws_body)
    assert (tmp_path / "b" / "secret").read_text() != first  # one per cluster


def test_a_worker_reads_the_secret_and_fails_reported_when_there_is_none(tmp_path):
    # the secret is there: read once, then on to the installs
    aws_body = 'case "$*" in *"secret/spark-authenticate - "*) printf abc123 ;; esac\n'
    code, calls = _run_user_data(tmp_path / "ok", "worker", aws_body)
    assert calls[1].startswith(f"aws s3 cp {LOG}secret/spark-authenticate - --region")
    assert calls[2].startswith("dnf install"), calls
    # never made (the primary died): the worker gives up at the ready timeout, reported
    aws_body = (
        'case "$*" in *"secret/spark-authenticate - "*) exit 1 ;; *) cat >"$STUBS/r" ;; esac\n'
    )
    code, calls = _run_user_data(tmp_path / "none", "worker", aws_body, ready_timeout=1)
    assert code != 0
    assert not [c for c in calls if c.startswith("dnf")]
    report = json.loads((tmp_path / "none" / "r").read_text())
    assert report["role"] == "worker"
    assert "SECRET_DEADLINE" in report["error"]


# --- executors sized from the node ------------------------------------------------------


def test_a_worker_offers_the_heaps_of_its_executors_not_all_its_ram(node_modules):
    daemons = node_modules["node_daemons"]
    # 4 vCPUs, 16 GiB: one executor of 9681 MiB heap (executor_sizing's worked example);
    # before, a worker offered "RAM less 1 GiB" and the driver asked for 1 GiB anyway
    assert daemons.default_memory(4, 16384) == "9681m"
    assert daemons.default_memory(16, 65536) == f"{4 * 10379}m"


class _Master(http.server.BaseHTTPRequestHandler):
    status: dict = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        body = json.dumps(self.status).encode()
        self.send_response(200 if self.path == "/json/" else 404)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def master_page() -> Iterator[str]:
    """A stand-in for the master's status page (``/json/``) on 127.0.0.1."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Master)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_steps_ask_for_executors_that_fill_the_smallest_worker(node_modules, master_page):
    steps = node_modules["node_steps"]
    _Master.status = {
        "aliveworkers": 2,
        "workers": [
            {"cores": 4, "memory": 9681, "state": "ALIVE"},
            {"cores": 8, "memory": 20294, "state": "ALIVE"},
            {"cores": 2, "memory": 900, "state": "DEAD"},  # a lost spot worker: ignored
        ],
    }
    assert steps.executor_conf({"ui_url": master_page}) == {
        "spark.executor.cores": "4",
        "spark.executor.memory": "9681m",
        "spark.executor.memoryOverhead": f"{4 * 768 + 969}m",
    }
    assert steps.executor_conf({"ui_url": "http://127.0.0.1:9"}) == {}  # no answer: defaults
    assert steps.executor_conf(None) == {}


def test_the_steps_conf_is_the_node_s_plus_the_sizes_and_only_spark_reads_it(
    node_modules, tmp_path
):
    steps = node_modules["node_steps"]
    node_conf = tmp_path / "node-conf"
    node_conf.mkdir()
    (node_conf / "spark-defaults.conf").write_text(
        "spark.authenticate                            true\n"
        "spark.authenticate.secret                     0123abcd\n"
        "spark.local.dir                               /opt/fruits/work/scratch/spark\n"
    )
    (node_conf / "spark-env.sh").write_text("export TMPDIR=/opt/fruits/work/scratch/tmp\n")
    work = tmp_path / "steps"
    work.mkdir()
    sizes = {"spark.executor.memory": "9681m"}
    conf = steps.steps_conf(work, node_conf, sizes)
    written = work / "conf" / "spark-defaults.conf"
    assert written.stat().st_mode & 0o777 == 0o600
    assert (work / "conf").stat().st_mode & 0o777 == 0o700
    assert conf["spark.authenticate.secret"] == "0123abcd"
    assert "spark.executor.memory 9681m" in written.read_text().splitlines()
    assert (work / "conf" / "spark-env.sh").read_text().startswith("export TMPDIR=")


# --- the steps' output: new bytes as parts, a bounded tail --------------------------------


class FakeLog:
    uri = LOG

    def __init__(self):
        self.puts: list[tuple[str, bytes]] = []

    def put(self, name: str, body: bytes, content_type: str = "text/plain") -> None:
        self.puts.append((name, body))


def test_a_running_step_s_output_goes_up_once_in_parts_and_as_a_bounded_tail(
    node_modules, tmp_path
):
    steps = node_modules["node_steps"]
    log = FakeLog()
    mirror = steps.Mirror(log, tail_every=0)  # a tail on every poll, to see each one
    folder = tmp_path / "s-1"
    folder.mkdir()
    whole = b""
    for poll in range(10):  # a step writing 100 KiB of stderr between polls
        chunk = f"line {poll}\n".encode() * (100 * 1024 // 8)
        with (folder / "stderr").open("ab") as f:
            f.write(chunk)
        whole += chunk
        mirror.progress("s-1", folder)
    mirror.progress("s-1", folder)  # nothing new: nothing sent
    parts = [(k, b) for k, b in log.puts if k.startswith("steps/s-1/stderr.parts/")]
    assert [k for k, _ in parts] == [f"steps/s-1/stderr.parts/{n:05d}" for n in range(1, 11)]
    assert b"".join(b for _, b in parts) == whole  # every byte, once
    tails = [b for k, b in log.puts if k == "steps/s-1/stderr"]
    assert len(tails) == 10 and all(len(t) <= steps.TAIL_BYTES + 100 for t in tails)
    assert tails[-1].endswith(whole[-1000:])
    assert tails[-1].startswith(f"[{len(whole) - steps.TAIL_BYTES} earlier bytes".encode())
    sent = sum(len(b) for _, b in log.puts)
    assert sent < len(whole) + 10 * (steps.TAIL_BYTES + 100)  # whole-file copies: 5.5x
    assert not [k for k, _ in log.puts if "stdout" in k]  # no stdout file: nothing


def test_a_running_step_s_tail_is_refreshed_now_and_then_and_at_its_end(node_modules, tmp_path):
    steps = node_modules["node_steps"]
    log = FakeLog()
    mirror = steps.Mirror(log)  # TAIL_EVERY: 5 minutes between a running step's tails
    folder = tmp_path / "s-2"
    folder.mkdir()
    for poll in range(5):
        with (folder / "stdout").open("ab") as f:
            f.write(f"poll {poll}\n".encode())
        mirror.progress("s-2", folder)
    assert [b for k, b in log.puts if k == "steps/s-2/stdout"] == [b"poll 0\n"]
    assert len([k for k, _ in log.puts if ".parts/" in k]) == 5  # the parts: every poll
    (folder / "state.json").write_text(json.dumps({"state": "COMPLETED"}))
    mirror.changed("s-2", folder)
    tails = [b for k, b in log.puts if k == "steps/s-2/stdout"]
    assert tails[-1] == b"".join(f"poll {n}\n".encode() for n in range(5))
    assert log.puts[-1][0] == "steps/s-2/state.json"  # the output before the state


# --- run-steps for real: a spark-submit, its event log and output in S3 -----------------


TINY_JOB = """
from pyspark.sql import SparkSession

spark = SparkSession.builder.appName("ec2-events-test").getOrCreate()
print("total", spark.sparkContext.parallelize(range(100), 2).sum())
spark.stop()
"""


def test_run_steps_sends_spark_s_event_log_and_the_output_parts(code, moto, aws, tmp_path):
    aws.s3.create_bucket(Bucket=BUCKET)
    node_conf, events = tmp_path / "node-conf", tmp_path / "events"
    node_conf.mkdir()
    events.mkdir()
    (node_conf / "spark-defaults.conf").write_text(
        "spark.eventLog.enabled                        true\n"
        f"spark.eventLog.dir                            file://{events}\n"
        f"spark.local.dir                               {tmp_path / 'scratch'}\n"
        f"spark.executorEnv.TMPDIR                      {tmp_path / 'tmp'}\n"
    )
    job = tmp_path / "job.py"
    job.write_text(TINY_JOB)
    submit = [str(Path(PYTHON).parent / "spark-submit"), "--master", "local[1]",
              "--conf", "spark.ui.enabled=false", str(job)]  # fmt: skip
    steps = [{"id": "s-1EVENTS", "name": "tiny", "argv": submit}]
    aws.s3.put_object(Bucket=BUCKET, Key=LOG_KEY + "steps.json", Body=json.dumps(steps))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(
        AWS_ENDPOINT_URL=moto, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION, AWS_EC2_METADATA_DISABLED="true",
        SPARK_LOCAL_IP="127.0.0.1", SPARK_CONF_DIR=str(node_conf),
    )  # fmt: skip
    out = tmp_path / "run-steps.out"
    argv = [PYTHON, str(code / "node.py"), "run-steps", "--log-prefix", LOG,
            "--work-dir", str(tmp_path / "steps"), "--mirror-interval", "2"]  # fmt: skip
    with out.open("wb") as sink:
        done = subprocess.run(argv, env=env, stdout=sink, stderr=subprocess.STDOUT, timeout=600)
    text = out.read_text(errors="replace")
    assert done.returncode == 0, text[-3000:]
    state = json.loads(aws.read(f"{LOG_KEY}steps/s-1EVENTS/state.json"))
    assert state["state"] == "COMPLETED"
    keys = aws.keys(LOG_KEY)
    sent = {
        k.removeprefix(LOG_KEY + "spark-events/"): aws.read(k)
        for k in keys
        if k.startswith(LOG_KEY + "spark-events/")
    }
    # Spark 4 rolls event logs: a folder per application; all of it, as the driver left it
    local = {
        p.relative_to(events).as_posix(): p.read_bytes()
        for p in events.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }
    assert sent == local and len(sent) >= 2, (sorted(sent), sorted(local))
    assert [n for n in sent if re.search(r"/events_1_.*", n)], sorted(sent)
    assert not [n for n in sent if n.endswith(".inprogress")]
    parts = sorted(k for k in keys if k.startswith(f"{LOG_KEY}steps/s-1EVENTS/stdout.parts/"))
    assert parts and b"total 4950" in b"".join(aws.read(k) for k in parts)
    assert b"total 4950" in aws.read(f"{LOG_KEY}steps/s-1EVENTS/stdout")  # the tail
    # the steps ran with the node's configuration, copied for them (no master: no sizes)
    conf = (tmp_path / "steps" / "conf" / "spark-defaults.conf").read_text()
    assert f"spark.eventLog.dir file://{events}" in conf.splitlines()
    assert "no executor size" in text
