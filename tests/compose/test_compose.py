"""docker-compose.yaml and Dockerfile, checked without a Docker daemon (none runs here)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer")  # fmt: skip
INIT_SERVICES = ("airflow-init", "minio-init")
VARIABLE = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(text: str, env: dict[str, str] | None = None) -> str:
    """Compose's ``${VAR:-default}`` with an empty environment: the defaults a user gets."""
    env = env or {}
    return VARIABLE.sub(lambda m: env.get(m.group(1), m.group(2) or ""), text).replace("$$", "$")


@pytest.fixture(scope="module")
def raw() -> str:
    return (ROOT / "docker-compose.yaml").read_text()


@pytest.fixture(scope="module")
def compose(raw) -> dict:
    return yaml.safe_load(interpolate(raw))


def test_services(compose):
    assert set(compose["services"]) == {"postgres", "minio", *INIT_SERVICES, *AIRFLOW_SERVICES}


def test_airflow_services_share_one_common_block(compose):
    envs = [compose["services"][s]["environment"] for s in AIRFLOW_SERVICES]
    assert all(e == envs[0] for e in envs)
    assert envs[0]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert "@postgres/" in envs[0]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    commands = {s: compose["services"][s]["command"] for s in AIRFLOW_SERVICES}
    assert commands == {"airflow-apiserver": "api-server", "airflow-scheduler": "scheduler",
                        "airflow-dag-processor": "dag-processor",
                        "airflow-triggerer": "triggerer"}  # fmt: skip
    for s in AIRFLOW_SERVICES:
        svc = compose["services"][s]
        assert svc["image"] == compose["services"]["airflow-init"]["image"]
        mounts = {v.split(":")[1] for v in svc["volumes"]}
        assert {"/opt/airflow/dags", "/opt/airflow/plugins", "/opt/airflow/spark_jobs"} <= mounts


def test_everything_waits_for_init_and_healthy_dependencies(compose):
    for s in AIRFLOW_SERVICES:
        deps = compose["services"][s]["depends_on"]
        assert deps["airflow-init"]["condition"] == "service_completed_successfully"
        assert deps["minio-init"]["condition"] == "service_completed_successfully"
        assert deps["postgres"]["condition"] == "service_healthy"
    assert compose["services"]["airflow-init"]["depends_on"]["postgres"]["condition"] == (
        "service_healthy"
    )
    assert "airflow db migrate" in compose["services"]["airflow-init"]["command"][-1]


def test_long_running_services_have_healthchecks(compose):
    for name, svc in compose["services"].items():
        if name in INIT_SERVICES:
            continue
        check = svc.get("healthcheck", {})
        assert check.get("test"), f"{name} has no healthcheck"
        assert svc.get("restart") == "always", name


def test_images_are_pinned(compose):
    for name, svc in compose["services"].items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: {image} is not pinned"


def test_the_image_is_built_from_the_pinned_requirements(compose):
    dockerfile = (ROOT / "Dockerfile").read_text()
    airflow = (ROOT / "requirements" / "airflow.txt").read_text()
    pinned = re.search(r"^apache-airflow==(\S+)$", airflow, re.M)
    base = re.search(r"^FROM apache/airflow:(\S+?)-python3\.11$", dockerfile, re.M)
    assert base and pinned and base.group(1) == pinned.group(1)
    assert compose["services"]["airflow-apiserver"]["image"].endswith(":" + pinned.group(1))
    assert "-r /opt/fruits/requirements/airflow.txt -c /opt/fruits/constraints.txt" in dockerfile
    assert "jre" in dockerfile  # Spark needs Java
    for name, svc in compose["services"].items():  # nothing installed at container start
        assert "pip install" not in json.dumps(svc.get("command", "")), name


def test_ports_are_bound_to_loopback(compose):
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name}: {port}"


def test_secrets_are_overridable_local_defaults_only(raw):
    """Every secret is ${VAR:-default}; the defaults are listed in the header for the user."""
    header = raw.split("\nx-airflow-common")[0]
    secret_key = re.compile(r"(PASSWORD|SECRET|JWT|TOKEN|FERNET)", re.I)
    found = 0
    for line in raw.splitlines():
        key, sep, value = line.strip().partition(":")
        if not sep or not secret_key.search(key) or line.lstrip().startswith("#"):
            continue
        value = value.strip().rstrip(",").strip('"')
        if not value or value.startswith(("/", ">")):
            continue  # a file path or a folded block, checked below
        found += 1
        match = VARIABLE.fullmatch(value)
        assert match, f"secret in the clear: {line.strip()}"
        assert match.group(1) in header, f"{match.group(1)} not documented in the header"
    assert found >= 4
    assert "AIRFLOW__CORE__FERNET_KEY" not in raw or "${" in raw


def connection(uri: str):
    from airflow.models.connection import Connection

    return Connection(conn_id="aws_default", uri=uri)


def test_connection_points_at_minio_with_the_minio_credentials(compose):
    env = compose["services"]["airflow-scheduler"]["environment"]
    conn = connection(env["AIRFLOW_CONN_AWS_DEFAULT"])
    assert conn.conn_type == "aws"
    assert conn.extra_dejson == {"endpoint_url": "http://minio:9000", "region_name": "us-east-1"}
    # boto3 takes the credentials from the environment: MinIO's root user by default
    assert (conn.login, conn.password) == (None, None)
    minio = compose["services"]["minio"]["environment"]
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
        minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"]
    )  # fmt: skip


def dot_env(path: Path) -> dict[str, str]:
    """The ``KEY=value`` lines of an env file (comments and blanks left out)."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_env_example_lists_every_variable_with_its_default(raw):
    """.env.example names every variable the file reads, each at the file's default:
    copying it to .env changes nothing until a line is edited."""
    example = dot_env(ROOT / ".env.example")
    defaults: dict[str, str] = {}
    for name, default in re.findall(r"(?<!\$)" + VARIABLE.pattern, raw):  # $$: the container's
        assert defaults.setdefault(name, default) == default, f"{name}: two defaults"
    assert example == defaults
    commented = (ROOT / ".env.example").read_text().split("real AWS instead", 1)[1]
    assert "# FRUITS_COMPUTE=emr" in commented and "# AIRFLOW_CONN_AWS_DEFAULT=aws://" in commented


def test_a_dot_env_points_the_stack_at_aws(raw):
    """The connection, its credentials and the backend settings all come from .env."""
    doc = yaml.safe_load(interpolate(raw, {
        "AIRFLOW_CONN_AWS_DEFAULT": "aws://?region_name=eu-west-1",
        "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
        "FRUITS_COMPUTE": "emr", "FRUITS_BUCKET": "my-fruits",
        "FRUITS_INCOMING": "s3://my-landing/incoming", "FRUITS_EMR_SUBNET": "subnet-0abc",
    }))  # fmt: skip
    env = doc["services"]["airflow-scheduler"]["environment"]
    assert connection(env["AIRFLOW_CONN_AWS_DEFAULT"]).extra_dejson == {"region_name": "eu-west-1"}
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == ("", "")  # the role's
    assert (env["FRUITS_COMPUTE"], env["FRUITS_BUCKET"]) == ("emr", "my-fruits")
    assert (env["FRUITS_INCOMING"], env["FRUITS_EMR_SUBNET"]) == (
        "s3://my-landing/incoming", "subnet-0abc"
    )  # fmt: skip
    from fruits.settings import load_settings

    fruits = {k: str(v) for k, v in env.items() if k.startswith("FRUITS_")}
    settings = load_settings(fruits)
    assert (settings.compute, settings.incoming, settings.emr.subnet) == (
        "emr", "s3://my-landing/incoming", "subnet-0abc"
    )  # fmt: skip


def test_bucket_is_created_private(compose):
    entry = compose["services"]["minio-init"]["entrypoint"]
    assert "mc mb --ignore-existing" in entry
    assert "anonymous" not in entry and "public" not in entry


def test_fruits_settings_are_ones_the_pipeline_reads(compose):
    documented = (ROOT / "docs" / "configuration.md").read_text()
    env = compose["services"]["airflow-scheduler"]["environment"]
    names = [k for k in env if k.startswith("FRUITS_")]
    assert names and all(n in documented for n in names), names


def test_overriding_a_secret_changes_it(raw):
    doc = yaml.safe_load(interpolate(raw, {"POSTGRES_PASSWORD": "s3cr3t"}))
    assert doc["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == "s3cr3t"
    conn = doc["services"]["airflow-scheduler"]["environment"][
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"
    ]
    assert ":s3cr3t@postgres/" in conn


@pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose v1 not installed (make test installs it: scripts/system-deps.sh)",
)
def test_compose_schema_accepts_the_file():
    for env_file in ([], ["--env-file", str(ROOT / ".env.example")]):
        done = subprocess.run(
            ["docker-compose", *env_file, "-f", str(ROOT / "docker-compose.yaml"), "config", "-q"],
            capture_output=True, text=True, cwd=ROOT,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
