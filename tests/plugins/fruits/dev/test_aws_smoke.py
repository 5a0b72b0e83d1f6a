"""``make aws-smoke``'s pieces, without an AWS account: it refuses without explicit
settings, states the cost from the settings, finds what is left billing (on moto), builds
the DAG run it would start (never started here) and writes the report from a result."""

from __future__ import annotations

import json
import sys

import pytest
from dag_support import BUCKET, REGION

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
        (EMR_ENV, {"region_name": REGION, "endpoint_url": "http://127.0.0.1:5000"}, "moto"),
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


# --- the cost --------------------------------------------------------------------------


def test_the_cost_lines_come_from_the_settings():
    lines = aws_smoke.cost_lines(load_settings(EMR_ENV), 24)
    text = "\n".join(lines)
    assert "primary  1 x m5.xlarge   on-demand $0.240/h each" in text
    assert "core     2 x m5.xlarge   on-demand $0.240/h each" in text
    assert "total    3 instances, $0.72/h; expected ~15 min: ~$0.18" in text
    assert "after ~75 min: ~$0.90" in text  # the idle hour after the steps
    assert "assumptions: prices are us-east-1 on-demand" in text

    spot = load_settings({**EMR_ENV, "FRUITS_EMR_TASK_SPOT_COUNT": "2"})
    assert "task     2 x m5.xlarge   spot      $0.125/h each" in "\n".join(
        aws_smoke.cost_lines(spot, 24)
    )


def test_ec2_costs_spot_workers_and_names_an_unpriced_type():
    settings = load_settings({**EC2_ENV, "FRUITS_EC2_WORKER_SPOT": "true",
                              "FRUITS_EC2_PRIMARY_TYPE": "x9.huge"})  # fmt: skip
    text = "\n".join(aws_smoke.cost_lines(settings, 24))
    assert "primary  1 x x9.huge     on-demand no price in the table" in text
    assert "worker   2 x m5.xlarge   spot      $0.077/h each" in text
    assert "at least $0.15/h" in text and "look up the price of x9.huge yourself" in text
    # the nodes' shutdown timer: ready timeout + steps' timeout + 30 min
    assert f"after ~{20 + 31 + 30} min" in text


def test_the_price_assumptions_are_the_benchs():
    from bench.emr_estimate import ASSUMPTIONS

    m5 = aws_smoke.EC2_USD_PER_HOUR["m5.xlarge"]
    assert m5 == ASSUMPTIONS["ec2_usd_per_node_hour"]
    assert m5 * aws_smoke.EMR_FEE_SHARE == pytest.approx(ASSUMPTIONS["emr_fee_per_node_hour"])
    assert (
        ASSUMPTIONS["spot_discount"],
        ASSUMPTIONS["emr_fixed_minutes"],
    ) == (aws_smoke.SPOT_DISCOUNT, aws_smoke.FIXED_MINUTES)


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
    text = "some log line\n" + json.dumps([
        {"task_id": "validate_params", "state": "success",
         "start_date": "2000-01-01T10:00:00+00:00", "end_date": "2000-01-01T10:00:02.5+00:00"},
        {"task_id": "publish_batch", "state": "", "start_date": "", "end_date": ""},
    ])  # fmt: skip
    assert aws_smoke.parse_task_states(text) == [
        {"task_id": "validate_params", "state": "success", "seconds": 2.5},
        {"task_id": "publish_batch", "state": "none", "seconds": None},
    ]
    assert aws_smoke.parse_task_states("no run found") == []


# --- nothing left behind (moto) --------------------------------------------------------


def _tagged_instance(aws, bucket: str = BUCKET) -> str:
    image = aws.ec2.describe_images()["Images"][0]["ImageId"]
    tags = [
        {"Key": "project", "Value": "fruits-pipeline"},
        {"Key": "fruits:bucket", "Value": bucket},
        {"Key": "fruits:cluster-id", "Value": "ec2-smoke"},
    ]
    done = aws.ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, InstanceType="m5.xlarge",
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )  # fmt: skip
    return done["Instances"][0]["InstanceId"]


def _cluster(aws, tagged: bool = True) -> str:
    tags = [{"Key": "project", "Value": "fruits-pipeline"}] if tagged else []
    return aws.emr.run_job_flow(
        Name="fruits_pipeline smoke" if tagged else "someone else's",
        ReleaseLabel="emr-7.13.0",
        Instances={
            "MasterInstanceType": "m5.xlarge",
            "InstanceCount": 1,
            "KeepJobFlowAliveWhenNoSteps": True,
        },  # fmt: skip
        JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
        Tags=tags,
    )["JobFlowId"]


def test_the_leftover_finder_reports_live_tagged_resources_until_they_end(aws):
    import boto3

    serverless = boto3.client("emr-serverless", endpoint_url=aws.s3.meta.endpoint_url,
                              region_name=REGION)  # fmt: skip
    instance, other_bucket = _tagged_instance(aws), _tagged_instance(aws, "not-ours")
    cluster, untagged = _cluster(aws), _cluster(aws, tagged=False)
    app = serverless.create_application(
        name="fruits", releaseLabel="emr-7.13.0", type="SPARK", tags={"project": "fruits-pipeline"}
    )["applicationId"]

    def look() -> list[str]:
        return aws_smoke.find_leftovers(aws.emr, aws.ec2, serverless, bucket=BUCKET)

    found = look()
    assert len(found) == 3, found
    assert any(f"EC2 instance {instance} (m5.xlarge, running, fruits:cluster-id=ec2-smoke)" == f
               for f in found)  # fmt: skip
    assert any(f.startswith(f"EMR cluster {cluster} (fruits_pipeline smoke, ") for f in found)
    assert any(f.startswith(f"EMR Serverless application {app} (fruits, ") for f in found)
    assert not any(other_bucket in f or untagged in f for f in found)

    aws.ec2.terminate_instances(InstanceIds=[instance])
    aws.emr.terminate_job_flows(JobFlowIds=[cluster])
    serverless.stop_application(applicationId=app)  # AWS deletes only stopped applications
    assert len(look()) == 1  # stopped is not gone: it could start again
    serverless.delete_application(applicationId=app)
    assert look() == []
    assert aws_smoke.find_leftovers(aws.emr, aws.ec2, None, bucket=BUCKET) == []


def test_settle_looks_again_until_nothing_is_left():
    answers = [["EMR cluster j-1 (x, TERMINATING)"], ["EMR cluster j-1 (x, TERMINATING)"], []]
    assert aws_smoke.settle(lambda: answers.pop(0), wait=5, every=0) == []
    assert aws_smoke.settle(lambda: ["stuck"], wait=0, every=0) == ["stuck"]


# --- the report ------------------------------------------------------------------------


RESULT = {
    "succeeded": False,
    "started": "2026-12-05T12:00:00+00:00",
    "total_seconds": 1003.2,
    "date": "2000-01-01",
    "images": 24,
    "weights": "random",
    "versions": {"Airflow": "3.3.2", "Amazon provider": "9.1.0", "fruits-pipeline": "0d817b9"},
    "region": "eu-west-1",
    "backend": "emr",
    "settings": aws_smoke.public_settings(
        {
            **EMR_ENV,
            "FRUITS_EMR_SERVICE_ROLE": "arn:aws:iam::123456789012:role/r",
            "FRUITS_FAKE_SECRET": "hunter2",
            "AWS_SECRET_ACCESS_KEY": "x",
            "AWS_DEFAULT_REGION": "eu-west-1",
        }
    ),  # fmt: skip
    "tasks": [
        {"task_id": "create_job_flow", "state": "success", "seconds": 412.0},
        {"task_id": "publish_batch", "state": "upstream_failed", "seconds": None},
    ],  # fmt: skip
    "outputs": {"rows": 24, "k": 5, "rejected": 0},
    "leftovers": ["EMR cluster j-1 (fruits_pipeline smoke, WAITING)"],
}


def test_the_report_is_markdown_with_every_part_and_no_secret():
    text = aws_smoke.report(RESULT)
    assert text.startswith("### fruits-pipeline AWS smoke run: FAILED\n")
    assert "total 16 min 43 s; batch 2000-01-01 (24 images), weights random." in text
    for row in (
        "| Airflow | 3.3.2 |", "| Amazon provider | 9.1.0 |", "| fruits-pipeline | 0d817b9 |",
        "| region | eu-west-1 |", "| backend | emr |", "| create_job_flow | success | 6 min 52 s |",
        "| publish_batch | upstream_failed | - |",
    ):  # fmt: skip
        assert row in text.splitlines()
    assert "FRUITS_EMR_SUBNET=subnet-0abc" in text
    assert "FRUITS_EMR_SERVICE_ROLE=arn:aws:iam::<account>:role/r" in text
    assert "FRUITS_FAKE_SECRET=<hidden>" in text
    assert "hunter2" not in text and "AWS_SECRET_ACCESS_KEY" not in text
    assert "Outputs: 24 rows, k=5, 0 rejected" in text
    assert "Leftovers: 1, STILL BILLING\n- EMR cluster j-1 (fruits_pipeline smoke, WAITING)" in text
    clean = aws_smoke.report({**RESULT, "succeeded": True, "tasks": [], "outputs": None,
                              "leftovers": []})  # fmt: skip
    assert "run: succeeded" in clean and "Leftovers: none" in clean
    assert "Outputs: none published" in clean and "| (no task ran) | | |" in clean


def test_versions_name_airflow_the_provider_and_the_commit():
    found = aws_smoke.versions()
    assert found["Airflow"].startswith("3.") and found["Amazon provider"][0].isdigit()
    assert found["fruits-pipeline"]
