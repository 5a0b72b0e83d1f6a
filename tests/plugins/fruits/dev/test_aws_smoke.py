"""``make aws-smoke``'s command, without an AWS account: it refuses without explicit
settings, asks before it spends, and builds the DAG run it would start (never started
here). The cost and the report have files of their own."""

from __future__ import annotations

import json
import sys

import pytest
from dag_support import BUCKET

from fruits.dev import aws_smoke
from fruits.settings import load_settings

CONN = json.dumps({"conn_type": "aws", "extra": {"region_name": "eu-west-1"}})
EMR_ENV = {"FRUITS_COMPUTE": "emr", "FRUITS_BUCKET": "my-fruits",
           "FRUITS_EMR_SUBNET": "subnet-0abc"}  # fmt: skip
EC2_ENV = {"FRUITS_COMPUTE": "ec2", "FRUITS_BUCKET": "my-fruits",
           "FRUITS_EC2_SUBNET": "subnet-0abc", "FRUITS_EC2_SECURITY_GROUP": "sg-0abc"}  # fmt: skip
REGIONAL = {"region_name": "eu-west-1"}


# --- refusing to start -----------------------------------------------------------------


def test_nothing_explicit_is_refused_naming_each_missing_setting():
    problems = "\n".join(aws_smoke.refusals({}, None))
    for missing in ("FRUITS_COMPUTE is not set", "FRUITS_BUCKET is not set",
                    "connection aws_default is not defined", "no region"):  # fmt: skip
        assert missing in problems


@pytest.mark.parametrize(
    ("env", "extra", "named"),
    [
        ({**EMR_ENV, "FRUITS_COMPUTE": "local"}, REGIONAL, "FRUITS_COMPUTE='local'"),
        ({**EMR_ENV, "FRUITS_EMR_SUBNET": ""}, REGIONAL, "FRUITS_EMR_SUBNET is not set"),
        ({**EC2_ENV, "FRUITS_EC2_SECURITY_GROUP": " "}, REGIONAL, "FRUITS_EC2_SECURITY_GROUP"),
        ({**EC2_ENV, "FRUITS_EC2_SUBNET": ""}, REGIONAL, "FRUITS_EC2_SUBNET is not set"),
        (EMR_ENV, {"region_name": "eu-west-1", "endpoint_url": "http://127.0.0.1:5000"}, "moto"),
        ({**EMR_ENV, "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000"}, REGIONAL, "MinIO"),
        ({**EMR_ENV, "AWS_ACCESS_KEY_ID": "testing"}, REGIONAL, "moto's"),
        (EMR_ENV, {}, "no region"),
    ],
)
def test_a_missing_setting_or_a_local_endpoint_is_refused(env, extra, named):
    problems = aws_smoke.refusals(env, extra)
    assert len(problems) == 1 and named in problems[0]


def test_explicit_settings_pass_with_the_region_from_either_place():
    assert aws_smoke.refusals(EMR_ENV, REGIONAL) == []
    assert aws_smoke.refusals(EC2_ENV, REGIONAL) == []
    assert aws_smoke.refusals({**EC2_ENV, "AWS_DEFAULT_REGION": "eu-west-1"}, {}) == []
    assert aws_smoke.region_of({"AWS_DEFAULT_REGION": "us-east-1"}, REGIONAL) == "eu-west-1"


def test_the_connection_is_read_from_json_or_uri(monkeypatch):
    assert aws_smoke.connection_extra("aws_default", {"AIRFLOW_CONN_AWS_DEFAULT": CONN}) == REGIONAL
    uri = "aws://?region_name=eu-west-1&role_arn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fa"
    extra = aws_smoke.connection_extra("other", {"AIRFLOW_CONN_OTHER": uri})
    assert extra["region_name"] == "eu-west-1" and extra["role_arn"].endswith(":role/a")
    # the run's own Airflow home would not have a connection of another Airflow's database
    assert aws_smoke.connection_extra("aws_default", {}) is None


def test_main_refuses_and_touches_nothing_without_explicit_settings(monkeypatch, capsys):
    monkeypatch.delenv("AIRFLOW_CONN_AWS_DEFAULT", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setattr(aws_smoke, "connection_extra", lambda conn_id, env: None)
    monkeypatch.setattr(aws_smoke, "write_sample", lambda *a: pytest.fail("wrote a batch"))
    monkeypatch.setenv("FRUITS_COMPUTE", "ec2")
    assert aws_smoke.main(["--yes"]) == 2
    err = capsys.readouterr().err
    assert "will not start" in err
    for name in ("FRUITS_BUCKET", "FRUITS_EC2_SUBNET", "FRUITS_EC2_SECURITY_GROUP", "region"):
        assert name in err


def test_main_asks_before_spending(monkeypatch, capsys):
    monkeypatch.setattr(aws_smoke, "connection_extra", lambda conn_id, env: REGIONAL)
    monkeypatch.setattr(aws_smoke, "write_sample", lambda *a: pytest.fail("wrote a batch"))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    for name, value in EMR_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert aws_smoke.main([]) == 1
    out = capsys.readouterr().out
    assert "Cost of this smoke run on emr" in out and out.rstrip().endswith("not started")


# --- the run, built but not started ----------------------------------------------------


def test_the_dag_run_it_would_start(tmp_path):
    assert aws_smoke.dag_test_command("2000-01-01") == [
        sys.executable, "-m", "airflow", "dags", "test", "fruits_pipeline", "2000-01-01"
    ]  # fmt: skip
    env = aws_smoke.run_env({**EMR_ENV, "PATH": "/bin"}, incoming="s3://src/in", weights="random")
    assert env["FRUITS_INCOMING"] == "s3://src/in" and env["FRUITS_WEIGHTS"] == "random"
    assert env["FRUITS_EMR_SUBNET"] == "subnet-0abc" and env["PATH"] == "/bin"
    assert env["AIRFLOW_HOME"] == str(aws_smoke.WORK / "airflow")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"].endswith("/dags")
    own = aws_smoke.run_env({"AIRFLOW_HOME": str(tmp_path)}, incoming="x", weights="imagenet")
    assert own["AIRFLOW_HOME"] == str(tmp_path) and "AIRFLOW__CORE__DAGS_FOLDER" not in own


def test_the_sample_batch_goes_to_a_folder_or_to_s3(tmp_path):
    folder = load_settings({"FRUITS_INCOMING": str(tmp_path)})
    where = aws_smoke.write_sample(folder, "2000-01-01", 2, None)
    assert where == f"{tmp_path}/2000-01-01"
    assert len(list((tmp_path / "2000-01-01").rglob("*.jpg"))) == 12

    uploaded = []
    s3 = load_settings({"FRUITS_INCOMING": "s3://src/landing/"})
    where = aws_smoke.write_sample(s3, "2000-01-01", 1, lambda p, b, k: uploaded.append((b, k)))
    assert where == "s3://src/landing/2000-01-01"
    assert ("src", "landing/2000-01-01/Banana/0_100.jpg") in uploaded and len(uploaded) == 6


def test_task_states_are_read_from_airflows_json():
    text = "[2026-12-05 12:00:00] a log line\n[1, 2]\n" + json.dumps([
        {"task_id": "validate_params", "state": "success",
         "start_date": "2000-01-01T10:00:00+00:00", "end_date": "2000-01-01T10:00:02.5+00:00"},
        {"task_id": "publish_batch", "state": "", "start_date": "", "end_date": ""},
    ])  # fmt: skip
    assert aws_smoke.parse_task_states(text) == [
        {"task_id": "validate_params", "state": "success", "seconds": 2.5},
        {"task_id": "publish_batch", "state": "none", "seconds": None},
    ]
    assert aws_smoke.parse_task_states("no run found") == []


# --- the whole command on moto, the DAG run and Airflow's CLI faked ----------------------


def test_main_writes_the_batch_runs_the_dag_and_reports(aws, monkeypatch, tmp_path, capsys):
    aws.s3.create_bucket(Bucket=BUCKET)
    env = {**EMR_ENV, "FRUITS_BUCKET": BUCKET, "FRUITS_INCOMING": f"s3://{BUCKET}/landing"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    ran = []
    monkeypatch.setattr(aws_smoke, "refusals", lambda env, extra: [])  # moto's endpoint
    monkeypatch.setattr(aws_smoke, "WORK", tmp_path)
    monkeypatch.setattr(aws_smoke, "SETTLE_SECONDS", 0)
    monkeypatch.setattr(aws_smoke, "_logged", lambda cmd, env, log: ran.append(cmd) or 0)
    monkeypatch.setattr(aws_smoke, "_clients", lambda conn, region: (aws.emr, aws.ec2, None))
    monkeypatch.setattr(aws_smoke, "_task_states", lambda date, env: [
        {"task_id": "publish_batch", "state": "success", "seconds": 3.0}])  # fmt: skip
    monkeypatch.setattr(aws_smoke, "_outputs", lambda s, d: {"rows": 24, "k": 4, "rejected": 0})

    assert aws_smoke.main(["--yes", "--weights", "random"]) == 0
    assert ran == [[sys.executable, "-m", "airflow", "db", "migrate"],
                   aws_smoke.dag_test_command("2000-01-01")]  # fmt: skip
    assert len(aws.keys("landing/2000-01-01/")) == 24
    text = (tmp_path / "report.md").read_text()
    assert "run: succeeded" in text and "Outputs: 24 rows, k=4" in text
    assert "FRUITS_WEIGHTS=random" in text and "| publish_batch | success | 3 s |" in text
    assert text in capsys.readouterr().out

    instance = aws.ec2.run_instances(
        ImageId=aws.ec2.describe_images()["Images"][0]["ImageId"], MinCount=1, MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [
            {"Key": "project", "Value": "fruits-pipeline"},
            {"Key": "fruits:bucket", "Value": BUCKET}]}],
    )["Instances"][0]["InstanceId"]  # fmt: skip
    assert aws_smoke.main(["--yes"]) == 1  # something left billing: red
    text = (tmp_path / "report.md").read_text()
    assert (
        "run: FAILED" in text and f"Leftovers: 1, STILL BILLING\n- EC2 instance {instance}" in text
    )

    aws.ec2.terminate_instances(InstanceIds=[instance])
    monkeypatch.setattr(aws_smoke, "_outputs", lambda s, d: None)
    assert aws_smoke.main(["--yes"]) == 1  # a run that published nothing proves nothing
    assert "Outputs: none published" in (tmp_path / "report.md").read_text()
