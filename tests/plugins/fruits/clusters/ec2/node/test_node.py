"""The ``ec2`` backend's node side, for real where it can be: the user data rendered and
checked by bash and shellcheck (its failure report run with stub commands), the
s3a connector's version read from pyspark's own jars, and ``node.py`` -- the program
the instances run -- starting a real Spark master and worker on 127.0.0.1 and running
steps, with moto's S3 on loopback as the cluster's log prefix."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from dag_support import BUCKET, REGION

from fruits.clusters.ec2 import user_data as ec2

PYTHON = sys.executable
START_DEADLINE = 180  # seconds: JVMs can start slowly on a loaded host
CLUSTER_ID = "ec2-test-0001"
LOG = f"s3://{BUCKET}/logs/ec2/{CLUSTER_ID}/"
LOG_KEY = f"logs/ec2/{CLUSTER_ID}/"


def user_data_values(**changes) -> dict[str, object]:
    values: dict[str, object] = {
        "role": "primary",
        "cluster_id": CLUSTER_ID,
        "log_prefix": LOG,
        "code_prefix": f"s3://{BUCKET}/code/20261124-abc/",
        "master_host": "",
        "workers": 2,
        "ready_timeout": 1200,
        "lifetime_minutes": 240,
        "hadoop_aws": "org.apache.hadoop:hadoop-aws:3.5.0",
        "wheels_uri": f"s3://{BUCKET}/wheels/25eb1ce0b6645ef3/x86_64/",
        "jars_uri": "",
        "python": "python3.11",
        "region": REGION,
    }
    values.update(changes)
    return values


PRIMARY = user_data_values()
WORKER = user_data_values(role="worker", master_host="10.0.1.23")


# --- user data ------------------------------------------------------------------------


def test_user_data_fills_every_placeholder_inside_single_quotes():
    template = ec2.USER_DATA_TEMPLATE.read_text()
    assert set(re.findall(r"\{\{(\w+)\}\}", template)) == ec2.KEYS
    for values in (PRIMARY, WORKER):
        script = ec2.render_user_data(values)
        assert "{{" not in script and "}}" not in script
        for name, value in values.items():
            assert f"{name.upper()}='{value}'" in script, name
        assert len(script.encode()) < 16 * 1024  # EC2's user data limit


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        ({"region": None}, KeyError, ["region"]),  # None: dropped below
        ({"cluster_id": "it's"}, ValueError, ["cluster_id", "safe shell word"]),
        ({"log_prefix": f"s3://{BUCKET}/x/'; reboot; '/"}, ValueError, ["log_prefix"]),
        ({"code_prefix": f"s3://{BUCKET}/code/\nreboot/"}, ValueError, ["code_prefix"]),
        ({"zone": "us-east-1a"}, ValueError, ["zone"]),
        ({"role": "master"}, ValueError, ["role"]),
        ({"workers": 0}, ValueError, ["workers"]),
        ({"lifetime_minutes": "soon"}, ValueError, ["lifetime_minutes"]),
        ({"log_prefix": f"s3://{BUCKET}/logs/ec2/x"}, ValueError, ["log_prefix"]),
        ({"hadoop_aws": "latest"}, ValueError, ["hadoop_aws"]),
    ],
)
def test_user_data_refuses_missing_and_unsafe_values(change, error, words):
    values = {**PRIMARY, **change}
    values = {k: v for k, v in values.items() if v is not None}
    with pytest.raises(error) as raised:
        ec2.render_user_data(values)
    for word in words:
        assert word in str(raised.value)


def test_a_worker_needs_the_primary_address():
    with pytest.raises(ValueError, match="master_host"):
        ec2.render_user_data({**WORKER, "master_host": ""})


def _shellcheck() -> str:
    path = shutil.which("shellcheck")
    if path is None:
        pytest.fail("shellcheck is not installed: run scripts/system-deps.sh (as root)")
    return path


def test_user_data_passes_bash_and_shellcheck(tmp_path):
    shellcheck = _shellcheck()
    scripts = {"template": ec2.USER_DATA_TEMPLATE}
    for name, values in (("primary", PRIMARY), ("worker", WORKER)):
        scripts[name] = tmp_path / f"{name}.sh"
        scripts[name].write_text(ec2.render_user_data(values))
    for name, path in scripts.items():
        syntax = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert syntax.returncode == 0, (name, syntax.stderr)
        lint = subprocess.run([shellcheck, str(path)], capture_output=True, text=True)
        assert lint.returncode == 0, (name, lint.stdout, lint.stderr)


def _first(lines: list[str], pattern: str) -> int:
    return next(i for i, line in enumerate(lines) if re.search(pattern, line))


def test_user_data_order_and_what_it_leaves_out():
    script = ec2.render_user_data(WORKER)
    lines = [line.strip() for line in script.splitlines() if not line.lstrip().startswith("#")]
    shutdown = _first(lines, r"^shutdown -h \"\+\$LIFETIME_MINUTES\"")
    assert _first(lines, r"^set -euo pipefail$") < shutdown
    for later in (r"curl ", r"^dnf install", r"aws s3 cp --recursive", r"-m venv", r"node\.py"):
        assert shutdown < _first(lines, later), later
    # IMDSv2: a token first, every metadata read carries it
    token = _first(lines, r"-X PUT \"\$IMDS/api/token\"")
    assert "X-aws-ec2-metadata-token-ttl-seconds" in lines[token + 1]
    assert _first(lines, r"^INSTANCE_ID=\$\(imds instance-id\)") > token
    reads = [line for line in lines if "$IMDS/meta-data" in line]
    assert reads and all("X-aws-ec2-metadata-token: $IMDS_TOKEN" in script for _ in reads)
    assert "169.254.169.254/latest/meta-data" not in script  # never a read without token
    # no SSH: no client, no keys, and the daemon stopped
    code = "\n".join(lines)
    assert not re.search(r"\bssh\b|\bscp\b|authorized_keys|ssh-keygen", code)
    assert "systemctl disable --now sshd.service sshd.socket" in code
    # Spark: the connector of the given version, instance-profile credentials, region
    assert "spark.jars.packages" in code and "$HADOOP_AWS_COORDINATE" in code
    assert "org.apache.hadoop.fs.s3a.auth.IAMInstanceCredentialsProvider" in code
    assert "spark.hadoop.fs.s3a.endpoint.region           $REGION" in code
    assert 'worker --host "$PRIVATE_IP" --master "spark://$MASTER_HOST:7077"' in code
    assert "runuser -u spark --" in code  # the daemons do not run as root


def _stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


def test_user_data_reports_a_failure_to_s3_after_arming_the_dead_man_switch(tmp_path):
    """The rendered script with stubs for shutdown, curl and aws: IMDS gives a token and
    the instance id, then fails on the private IP. The script stops there, before it
    installs or changes anything, and reports the failure as failed/<role>-<id>.json."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    _stub(bin_dir, "shutdown", f'echo "shutdown $*" >>{calls}\n')
    _stub(
        bin_dir,
        "curl",
        f'echo "curl $*" >>{calls}\n'
        'case "$*" in\n'
        "*api/token*) echo TOKEN-123 ;;\n"
        "*meta-data/instance-id*) echo i-0fruit ;;\n"
        "*) echo 'curl: (22) The requested URL returned error: 404' >&2; exit 22 ;;\n"
        "esac\n",
    )
    _stub(bin_dir, "aws", f'echo "aws $*" >>{calls}\ncat >{tmp_path / "report.json"}\n')
    for forbidden in ("dnf", "useradd", "runuser", "systemctl"):
        _stub(bin_dir, forbidden, f'echo "{forbidden} $*" >>{calls}\n')
    script = tmp_path / "worker.sh"
    script.write_text(ec2.render_user_data(WORKER))
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FRUITS_NODE_LOG": str(tmp_path / "node.log"),
        "HOME": str(tmp_path),
    }
    done = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    made = calls.read_text().splitlines()
    assert made[0] == "shutdown -h +240 fruits-node: lifetime of 240 minutes is over"
    assert "-X PUT http://169.254.169.254/latest/api/token" in made[1]
    assert all("X-aws-ec2-metadata-token: TOKEN-123" in c for c in made[2:4])
    key = f"{LOG}failed/worker-i-0fruit.json"
    assert made[-1].startswith(f"aws s3 cp - {key} --region {REGION}")
    assert not [c for c in made if c.split()[0] in ("dnf", "useradd", "runuser")]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["role"] == "worker" and report["instance_id"] == "i-0fruit"
    assert "PRIVATE_IP=$(imds local-ipv4)" in report["error"]
    assert "exit status 22" in report["error"]
    assert "fruits-node: worker of cluster ec2-test-0001" in report["log_tail"]
    assert "returned error: 404" in report["log_tail"]  # curl's own message, from the log


# --- hadoop-aws matches pyspark's Hadoop ----------------------------------------------


def _pyspark_jars() -> Path:
    spec = importlib.util.find_spec("pyspark")
    return Path(next(iter(spec.submodule_search_locations))) / "jars"


def test_the_hadoop_setting_is_the_version_of_the_pinned_pysparks_hadoop_jars():
    """FRUITS_EC2_HADOOP_VERSION's default is the Hadoop inside the pyspark of
    constraints.txt (the one installed here): the Airflow worker reads no jar for it."""
    from fruits.settings import Ec2Settings

    jars = sorted(_pyspark_jars().glob("hadoop-client-api-*.jar"))
    assert len(jars) == 1, jars
    with zipfile.ZipFile(jars[0]) as jar:
        props = jar.read("common-version-info.properties").decode()
    version = re.search(r"^version=(\S+)$", props, re.M).group(1)
    assert Ec2Settings.hadoop_version == version
    script = ec2.render_user_data({**PRIMARY, "hadoop_aws": Ec2Settings.hadoop_version})
    assert f"HADOOP_AWS='{version}'" in script


# --- the node program ships alone ---------------------------------------------------


def test_the_node_program_imports_only_the_standard_library_boto3_and_its_bundle():
    """The nodes get the files of ``node_program()`` and a venv with boto3: no ``fruits``
    package, so every import of those files is of one of them or of those libraries."""
    import ast

    bundle = {path.stem for path in ec2.node_program()}
    assert {"node", "step_runner"} <= bundle
    allowed = set(sys.stdlib_module_names) | {"boto3", "botocore"} | bundle
    for path in ec2.node_program():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path.name}: a relative import fails on the node"
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


# --- node.py for real: Spark on 127.0.0.1, moto's S3 -----------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """Every process a test starts, ended with its process group (and the Spark daemons
    node.py detached into sessions of their own, from their pid files)."""

    def __init__(self, moto_url: str, code: Path):
        self.moto_url = moto_url
        self.code = code
        self.started: list[subprocess.Popen] = []
        self.work_dirs: list[Path] = []
        self.adopted: list[psutil.Process] = []  # seen while running: ended even if orphaned

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(
            AWS_ENDPOINT_URL=self.moto_url,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION=REGION,
            AWS_EC2_METADATA_DISABLED="true",
            SPARK_LOCAL_IP="127.0.0.1",
            PATH=f"{Path(PYTHON).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        return env

    def node(self, *args: str, work: Path, log: Path) -> subprocess.Popen:
        """``python node.py <args> --work-dir <work>`` from the code bundle, detached."""
        self.work_dirs.append(work)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [PYTHON, str(self.code / "node.py"), *args, "--work-dir", str(work)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env(),
                start_new_session=True,
            )
        self.started.append(proc)
        return proc

    def daemon_pid(self, work: Path, role: str) -> int:
        return json.loads((work / f"{role}.json").read_text())["pid"]

    def cleanup(self) -> None:
        groups = {p.pid for p in self.started}
        descendants = list(self.adopted)
        for proc in self.started:
            with contextlib.suppress(psutil.Error):
                descendants += psutil.Process(proc.pid).children(recursive=True)
        for work in self.work_dirs:
            for role in ("master", "worker"):
                with contextlib.suppress(OSError, ValueError, KeyError):
                    pid = self.daemon_pid(work, role)
                    groups.add(pid)
                    with contextlib.suppress(psutil.Error):
                        descendants += psutil.Process(pid).children(recursive=True)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pgid in groups:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, sig)
            for child in descendants:
                with contextlib.suppress(psutil.Error):
                    child.send_signal(sig)
            _, alive = psutil.wait_procs([p for p in descendants if p.is_running()], timeout=15)
            for proc in self.started:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=15)
            if not alive and all(p.poll() is not None for p in self.started):
                break
        for pgid in groups:  # daemons' leaders were children of node.py: collected by init
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pgid, os.WNOHANG)


@pytest.fixture(scope="module")
def code(tmp_path_factory) -> Path:
    """The parts of the job code bundle the nodes run (node.py, its modules and
    step_runner.py), side by side as the bundle has them."""
    folder = tmp_path_factory.mktemp("code")
    for path in ec2.node_program():
        shutil.copy(path, folder)
    return folder


@pytest.fixture(scope="module")
def processes(moto_server, code) -> Iterator[Processes]:
    procs = Processes(moto_server, code)
    try:
        yield procs
    finally:
        procs.cleanup()


def _s3(moto_url: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _get_json(s3, key: str) -> dict | None:
    try:
        return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


def _wait_exit(proc: subprocess.Popen, timeout: float, log: Path) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"node.py still running after {timeout}s:\n{_text(log)[-3000:]}")


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _alive_workers(ui_port: int) -> int:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as r:
        return json.load(r)["aliveworkers"]


@pytest.fixture(scope="module")
def cluster(moto_server, processes, tmp_path_factory) -> dict:
    """A primary (waiting for 1 worker) and a worker, both through node.py, as the user
    data starts them; ready.json is read from moto right away (later tests reset moto)."""
    s3 = _s3(moto_server)
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)
    s3.delete_object(Bucket=BUCKET, Key=LOG_KEY + "ready.json")
    root = tmp_path_factory.mktemp("cluster")
    port, ui_port = _free_port(), _free_port()
    primary_log, worker_log = root / "primary.out", root / "worker.out"
    primary = processes.node(
        "primary", "--host", "127.0.0.1", "--log-prefix", LOG, "--workers", "1",
        "--timeout", str(START_DEADLINE), "--cluster-id", CLUSTER_ID,
        "--instance-id", "i-0primary", "--port", str(port), "--ui-port", str(ui_port),
        work=root / "primary", log=primary_log,
    )  # fmt: skip
    worker = processes.node(
        "worker", "--host", "127.0.0.1", "--master", f"spark://127.0.0.1:{port}",
        "--cores", "1", "--memory", "1g", "--timeout", str(START_DEADLINE),
        work=root / "worker", log=worker_log,
    )  # fmt: skip
    worker_rc = _wait_exit(worker, START_DEADLINE + 60, worker_log)
    primary_rc = _wait_exit(primary, START_DEADLINE + 60, primary_log)
    return {
        "master_url": f"spark://127.0.0.1:{port}",
        "ui_port": ui_port,
        "root": root,
        "primary_rc": primary_rc,
        "worker_rc": worker_rc,
        "primary_out": _text(primary_log),
        "worker_out": _text(worker_log),
        "ready": _get_json(s3, LOG_KEY + "ready.json"),
        "failed": _get_json(s3, LOG_KEY + "failed/primary.json"),
    }


def test_primary_and_worker_start_a_cluster_and_report_ready(cluster):
    out = cluster["primary_out"] + cluster["worker_out"]
    assert cluster["worker_rc"] == 0, out
    assert cluster["primary_rc"] == 0, out
    assert cluster["failed"] is None
    ready = cluster["ready"]
    assert ready is not None, out
    assert ready["master_url"] == cluster["master_url"]
    assert ready["workers"] == 1 and ready["cluster_id"] == CLUSTER_ID
    assert ready["instance_id"] == "i-0primary"  # what wait_for_cluster checks it against
    assert ready["ready_at"].startswith("20")
    # the master outlives node.py (detached), with the worker registered
    assert _alive_workers(cluster["ui_port"]) == 1
    assert "registered with " + cluster["master_url"] in cluster["worker_out"]
    assert "cluster ready" in cluster["primary_out"]


def test_a_primary_short_of_a_quorum_reports_why_and_stops_its_master(
    moto, aws, processes, tmp_path
):
    aws.s3.create_bucket(Bucket=BUCKET)
    port, ui_port = _free_port(), _free_port()
    timeout = 60  # the one worker registers well within it; the other two never come
    primary = processes.node(
        "primary", "--host", "127.0.0.1", "--log-prefix", LOG, "--workers", "3",
        "--timeout", str(timeout), "--cluster-id", CLUSTER_ID, "--quorum-grace", "1",
        "--port", str(port), "--ui-port", str(ui_port),
        work=tmp_path / "primary", log=tmp_path / "primary.out",
    )  # fmt: skip
    worker = processes.node(
        "worker", "--host", "127.0.0.1", "--master", f"spark://127.0.0.1:{port}",
        "--cores", "1", "--memory", "512m", "--timeout", str(START_DEADLINE),
        work=tmp_path / "worker", log=tmp_path / "worker.out",
    )  # fmt: skip
    assert _wait_exit(worker, START_DEADLINE + 60, tmp_path / "worker.out") == 0
    assert _wait_exit(primary, timeout + 120, tmp_path / "primary.out") == 1
    failed = json.loads(aws.read(LOG_KEY + "failed/primary.json"))
    assert failed["role"] == "primary"
    assert failed["error"] == (
        f"only 1 of 3 workers registered with spark://127.0.0.1:{port} within {timeout}s "
        "(a quorum is 2)"
    )
    assert "Master" in failed["log_tail"]  # the master's own log
    written = aws.keys(LOG_KEY)
    assert LOG_KEY + "ready.json" not in written
    master = processes.daemon_pid(tmp_path / "primary", "master")
    assert not psutil.pid_exists(master) or psutil.Process(master).status() == "zombie"
    with pytest.raises(OSError):
        _alive_workers(ui_port)


def test_a_quorum_of_workers_makes_the_cluster_ready_after_the_grace(
    moto, aws, processes, tmp_path
):
    """One worker of two (a spot worker never granted): ready once the quorum (1) has
    been alive for the grace, long before the timeout."""
    aws.s3.create_bucket(Bucket=BUCKET)
    port, ui_port = _free_port(), _free_port()
    primary = processes.node(
        "primary", "--host", "127.0.0.1", "--log-prefix", LOG, "--workers", "2",
        "--timeout", "900", "--cluster-id", CLUSTER_ID, "--quorum-grace", "3",
        "--instance-id", "i-0primary", "--port", str(port), "--ui-port", str(ui_port),
        work=tmp_path / "primary", log=tmp_path / "primary.out",
    )  # fmt: skip
    worker = processes.node(
        "worker", "--host", "127.0.0.1", "--master", f"spark://127.0.0.1:{port}",
        "--cores", "1", "--memory", "512m", "--timeout", str(START_DEADLINE),
        work=tmp_path / "worker", log=tmp_path / "worker.out",
    )  # fmt: skip
    assert _wait_exit(worker, START_DEADLINE + 60, tmp_path / "worker.out") == 0
    started = time.monotonic()
    assert _wait_exit(primary, 120, tmp_path / "primary.out") == 0
    assert time.monotonic() - started < 60  # not the 900 s timeout
    ready = json.loads(aws.read(LOG_KEY + "ready.json"))
    assert (ready["workers"], ready["expected_workers"], ready["quorum"]) == (1, 2, 1)
    assert ready["instance_id"] == "i-0primary"
    assert "with a quorum of 1" in _text(tmp_path / "primary.out")


TINY_JOB = """
import sys
from pyspark.sql import SparkSession

spark = SparkSession.builder.appName("ec2-node-test").getOrCreate()
total = spark.sparkContext.parallelize(range(100), 2).sum()  # on the worker's executor
spark.createDataFrame([(total,)], "total long").coalesce(1).write.json(sys.argv[1])
print("total", total)
spark.stop()
"""


def _run_steps(
    processes, aws, steps: list[dict], tmp_path: Path, mirror_interval: float, *extra: str
) -> tuple[subprocess.Popen, Path]:
    """``node.py run-steps`` on ``steps`` (written to LOG/steps.json first, as
    add_steps does); the runner and the file its output goes to."""
    aws.s3.put_object(Bucket=BUCKET, Key=LOG_KEY + "steps.json", Body=json.dumps(steps))
    out = tmp_path / "run-steps.out"
    runner = processes.node(
        "run-steps", "--log-prefix", LOG, "--mirror-interval", str(mirror_interval),
        "--runner-log", str(out), *extra, work=tmp_path / "steps", log=out,
    )  # fmt: skip
    return runner, out


def _states(aws, ids: list[str]) -> dict[str, dict]:
    states = {}
    for sid in ids:
        with contextlib.suppress(aws.s3.exceptions.NoSuchKey):
            states[sid] = json.loads(aws.read(f"{LOG_KEY}steps/{sid}/state.json"))
    return states


def test_run_steps_runs_in_order_and_mirrors_to_s3(cluster, moto, aws, processes, tmp_path):
    assert cluster["ready"] is not None, cluster["primary_out"] + cluster["worker_out"]
    aws.s3.create_bucket(Bucket=BUCKET)
    job = tmp_path / "tiny_job.py"
    job.write_text(TINY_JOB)
    output, marker = tmp_path / "out", tmp_path / "third-step-ran"
    submit = [
        str(Path(PYTHON).parent / "spark-submit"), "--master", cluster["master_url"],
        "--conf", "spark.ui.enabled=false", "--conf", "spark.executor.memory=512m",
        "--conf", "spark.driver.memory=512m", str(job), str(output),
    ]  # fmt: skip
    steps = [
        {"id": "s-1SUBMIT", "name": "tiny spark job", "argv": submit},
        {"id": "s-2BROKEN", "name": "broken", "argv": [PYTHON, "-c", (
            "import sys; sys.stderr.write('error: the kiwi basket is empty\\n'); sys.exit(3)"
        )]},
        {"id": "s-3NEVER", "name": "never", "argv": [PYTHON, "-c", f"open({str(marker)!r}, 'w')"]},
    ]  # fmt: skip
    ids = [s["id"] for s in steps]
    runner, out = _run_steps(processes, aws, steps, tmp_path, mirror_interval=2)
    assert _wait_exit(runner, 600, out) == 1
    states = _states(aws, ids)
    assert [states[sid]["state"] for sid in ids] == ["COMPLETED", "FAILED", "CANCELLED"], (
        states,
        _text(out),
    )
    assert states["s-1SUBMIT"]["returncode"] == 0
    assert states["s-2BROKEN"]["returncode"] == 3
    assert "s-2BROKEN" in states["s-3NEVER"]["reason"]
    stderr = aws.read(f"{LOG_KEY}steps/s-2BROKEN/stderr").decode()
    assert "error: the kiwi basket is empty" in stderr
    assert "total 4950" in aws.read(f"{LOG_KEY}steps/s-1SUBMIT/stdout").decode()
    assert aws.read(f"{LOG_KEY}steps/s-1SUBMIT/stderr")  # Spark's log, mirrored too
    written = [json.loads(line) for f in output.glob("part-*.json") for line in f.open()]
    assert written == [{"total": 4950}]
    assert not marker.exists()
    # the job ran on the cluster: an executor of the worker ran it
    assert list((cluster["root"] / "worker" / "executors").glob("app-*/*/stderr"))
    assert "s-3NEVER: CANCELLED" in _text(out)
    # the runner says it ended, and how; its own log beside (the sensor shows its tail)
    assert _runner(aws)["state"] == "exited" and _runner(aws)["returncode"] == 1
    assert "s-3NEVER: CANCELLED" in aws.read(LOG_KEY + "runner.log").decode()


def _runner(aws) -> dict:
    return json.loads(aws.read(LOG_KEY + "runner.json"))


def test_a_runner_that_cannot_run_its_steps_reports_its_end_and_log(moto, aws, processes, tmp_path):
    """No steps.json (or a broken one): run-steps exits at once, and says so in S3 with
    its own log, so wait_for_step fails now instead of at its timeout."""
    aws.s3.create_bucket(Bucket=BUCKET)
    out = tmp_path / "run-steps.out"
    runner = processes.node(
        "run-steps", "--log-prefix", LOG, "--runner-log", str(out),
        work=tmp_path / "steps", log=out,
    )  # fmt: skip
    assert _wait_exit(runner, 60, out) == 1
    assert _runner(aws)["state"] == "exited"
    assert _runner(aws)["returncode"] == 1
    assert f"cannot read {LOG}steps.json" in aws.read(LOG_KEY + "runner.log").decode()


def test_sigterm_marks_the_running_step_interrupted_and_ends_it(moto, aws, processes, tmp_path):
    aws.s3.create_bucket(Bucket=BUCKET)
    steps = [
        {"id": "s-1SLEEPY", "name": "sleepy", "argv": [
            "bash", "-c", "echo 'waiting for the fruit' >&2; exec sleep 300"]},
        {"id": "s-2LATER", "name": "later", "argv": ["true"]},
    ]  # fmt: skip
    runner, out = _run_steps(processes, aws, steps, tmp_path, 1, "--heartbeat", "1")
    deadline = time.monotonic() + 120
    sleeper = None
    while sleeper is None:  # RUNNING in S3, its stderr mirrored while it runs
        assert runner.poll() is None, _text(out)
        assert time.monotonic() < deadline, _text(out)
        state = _states(aws, ["s-1SLEEPY"]).get("s-1SLEEPY", {})
        kids = [p for p in psutil.Process(runner.pid).children() if p.name() == "sleep"]
        processes.adopted += kids
        with contextlib.suppress(aws.s3.exceptions.NoSuchKey):
            progress = aws.read(f"{LOG_KEY}steps/s-1SLEEPY/stderr").decode()
            if state.get("state") == "RUNNING" and kids and "waiting for the fruit" in progress:
                sleeper = kids[0]
        time.sleep(0.5)
    while "beat_at" not in _runner(aws):  # it beats while the step runs
        assert time.monotonic() < deadline, _text(out)
        time.sleep(0.5)
    os.kill(runner.pid, signal.SIGTERM)
    assert _wait_exit(runner, 60, out) == 1
    assert _runner(aws)["state"] == "exited"  # the last word, after the last beat
    states = _states(aws, ["s-1SLEEPY", "s-2LATER"])
    assert states["s-1SLEEPY"]["state"] == "INTERRUPTED"
    assert "SIGTERM" in states["s-1SLEEPY"]["reason"]
    assert states["s-2LATER"]["state"] == "CANCELLED"
    assert not sleeper.is_running() or sleeper.status() == psutil.STATUS_ZOMBIE
