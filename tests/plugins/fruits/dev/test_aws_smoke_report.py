"""After ``make aws-smoke``'s run: the leftover finder on moto (live tagged EMR clusters,
EC2 instances and EMR Serverless applications, then nothing once they end; a service it
may not list is reported, not fatal) and the markdown report from a fake result."""

from __future__ import annotations

from dag_support import BUCKET, REGION

from fruits.dev import aws_smoke_report

EMR_ENV = {"FRUITS_COMPUTE": "emr", "FRUITS_BUCKET": "my-fruits",
           "FRUITS_EMR_SUBNET": "subnet-0abc"}  # fmt: skip


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
        return aws_smoke_report.find_leftovers(aws.emr, aws.ec2, serverless, bucket=BUCKET)

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
    assert aws_smoke_report.find_leftovers(aws.emr, aws.ec2, None, bucket=BUCKET) == []


def test_settle_looks_again_until_nothing_is_left():
    answers = [["EMR cluster j-1 (x, TERMINATING)"], ["EMR cluster j-1 (x, TERMINATING)"], []]
    assert aws_smoke_report.settle(lambda: answers.pop(0), wait=5, every=0) == []
    assert aws_smoke_report.settle(lambda: ["stuck"], wait=0, every=0) == ["stuck"]


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
    "settings": aws_smoke_report.public_settings(
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
    text = aws_smoke_report.report(RESULT)
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
    clean = aws_smoke_report.report({**RESULT, "succeeded": True, "tasks": [], "outputs": None,
                              "leftovers": []})  # fmt: skip
    assert "run: succeeded" in clean and "Leftovers: none" in clean
    assert "Outputs: none published" in clean and "| (no task ran) | | |" in clean


def test_versions_name_airflow_the_provider_and_the_commit():
    found = aws_smoke_report.versions()
    assert found["Airflow"].startswith("3.") and found["Amazon provider"][0].isdigit()
    assert found["fruits-pipeline"]


def test_a_service_the_credentials_may_not_list_is_reported_not_fatal(aws):
    from botocore.exceptions import ClientError

    class Denied:
        def get_paginator(self, name):
            error = {"Error": {"Code": "AccessDeniedException", "Message": "no"}}
            raise ClientError(error, "ListClusters")

    instance = _tagged_instance(aws)
    found = aws_smoke_report.find_leftovers(Denied(), aws.ec2, None, bucket=BUCKET)
    assert found[0].startswith("not checked: EMR clusters (An error occurred (AccessDenied")
    assert found[0].endswith("): look by hand")
    assert aws_smoke_report.billing(found) == [found[1]] and instance in found[1]

    aws.ec2.terminate_instances(InstanceIds=[instance])
    found = aws_smoke_report.settle(
        lambda: aws_smoke_report.find_leftovers(Denied(), aws.ec2, None, bucket=BUCKET),
        wait=60, every=0,
    )  # fmt: skip
    assert len(found) == 1 and aws_smoke_report.billing(found) == []  # no wait for it
    text = aws_smoke_report.report({**RESULT, "leftovers": found})
    assert "Leftovers: none\n- not checked: EMR clusters" in text
