"""The pieces the tasks are made of: S3 sync, job code bundle, steps, EMR job flow."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
from dag_support import BUCKET, ROOT

from fruits import s3sync
from fruits.config import load_settings
from fruits.emr import job_flow, step_log_key
from fruits.jobcode import build_bundle, build_zip
from fruits.steps import build_steps, localize

CODE = {
    "py_files": f"s3://{BUCKET}/code/v1/fruits_spark.zip",
    "featurize": f"s3://{BUCKET}/code/v1/featurize.py",
    "reduce": f"s3://{BUCKET}/code/v1/reduce.py",
    "bootstrap": f"s3://{BUCKET}/code/v1/bootstrap.sh",
    "requirements": f"s3://{BUCKET}/code/v1/requirements.txt",
    "weights": f"s3://{BUCKET}/code/v1/weights/w.weights.h5",
}
RUN = {"model": "vgg16", "image_size": 96, "variance": 0.9}
KEY = "manual__2026-11-24T00-00-00-00-00-0a1b2c3d"  # plan_run's run key


@pytest.fixture
def hook(moto, aws):
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    aws.s3.create_bucket(Bucket=BUCKET)
    return S3Hook(aws_conn_id="aws_default")


def test_upload_sends_only_new_or_changed_files_and_mirrors_deletions(hook, aws, tmp_path):
    batch = tmp_path / "2026-11-24"
    for name, data in {
        "Kiwi/a.jpg": b"a" * 10,
        "Kiwi/b.jpg": b"b" * 10,
        "Pêche/c.jpg": b"c",
    }.items():
        (batch / name).parent.mkdir(parents=True, exist_ok=True)
        (batch / name).write_bytes(data)
    prefix = "raw/batch=2026-11-24/"
    first = s3sync.upload_folder(hook, batch, BUCKET, prefix)
    assert (first.uploaded, first.unchanged, first.deleted) == (3, 0, 0)
    assert sorted(aws.keys(prefix)) == [
        prefix + k for k in ("Kiwi/a.jpg", "Kiwi/b.jpg", "Pêche/c.jpg")
    ]
    again = s3sync.upload_folder(hook, batch, BUCKET, prefix)
    assert (again.uploaded, again.unchanged, again.deleted) == (0, 3, 0)
    (batch / "Kiwi/a.jpg").write_bytes(b"A" * 10)  # same size, new content
    (batch / "Kiwi/b.jpg").unlink()
    (batch / "Kiwi/d.jpg").write_bytes(b"d")
    third = s3sync.upload_folder(hook, batch, BUCKET, prefix)
    assert (third.uploaded, third.unchanged, third.deleted) == (2, 1, 1)
    assert aws.read(prefix + "Kiwi/a.jpg") == b"A" * 10
    assert prefix + "Kiwi/b.jpg" not in aws.keys(prefix)


def test_multipart_etag_matches_what_s3_reports(hook, aws, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(hashlib.sha256(b"x").digest() * (12 * 1024 * 1024 // 32))  # 12 MiB
    # a 1 MiB chunk is below S3's 5 MiB minimum part: the transfer (and the ETag) use 5 MiB
    small_parts = {"multipart_threshold": 1024 * 1024, "multipart_chunksize": 1024 * 1024}
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    chunked = S3Hook(aws_conn_id="aws_default", transfer_config_args=small_parts)
    chunked.load_file(big, key="big.bin", bucket_name=BUCKET, replace=True)
    etag = aws.s3.head_object(Bucket=BUCKET, Key="big.bin")["ETag"].strip('"')
    assert etag.endswith("-3")  # really multipart: 5 + 5 + 2 MiB
    assert s3sync.local_etag(big, 1024 * 1024, 1024 * 1024) == etag
    assert s3sync.sync_up(chunked, {"big.bin": big}, BUCKET, "").uploaded == 0


def test_publish_replaces_outputs_and_writes_markers_last(hook, aws, tmp_path, monkeypatch):
    out = tmp_path / "features"
    out.mkdir()
    (out / "part-0-old.parquet").write_bytes(b"old")
    (out / "_SUCCESS").write_bytes(b"")
    (out / ".part-0-old.parquet.crc").write_bytes(b"crc")
    uri = f"s3://{BUCKET}/runs/batch=2026-11-24/features/"
    s3sync.publish_folder(hook, out, uri)
    prefix = "runs/batch=2026-11-24/features/"
    assert sorted(aws.keys(prefix)) == [prefix + "_SUCCESS", prefix + "part-0-old.parquet"]

    for f in out.iterdir():
        f.unlink()
    (out / "part-0-new.parquet").write_bytes(b"new")
    (out / "_SUCCESS").write_bytes(b"")
    calls = []
    real_load, real_delete = hook.load_file, hook.delete_objects
    monkeypatch.setattr(
        hook, "load_file", lambda **kw: calls.append(("put", kw["key"])) or real_load(**kw)
    )
    monkeypatch.setattr(
        hook,
        "delete_objects",
        lambda bucket, keys: calls.append(("delete", tuple(keys))) or real_delete(bucket, keys),
    )
    s3sync.publish_folder(hook, out, uri)
    assert sorted(aws.keys(prefix)) == [prefix + "_SUCCESS", prefix + "part-0-new.parquet"]
    # the marker goes first, comes back last; the old part is gone before it returns
    assert calls[0] == ("delete", (prefix + "_SUCCESS",))
    assert calls[-1] == ("put", prefix + "_SUCCESS")
    deleted_old = calls.index(("delete", (prefix + "part-0-old.parquet",)))
    assert deleted_old < len(calls) - 1


def test_stage_down_copies_a_file_or_a_prefix(hook, aws, tmp_path):
    aws.s3.put_object(Bucket=BUCKET, Key="code/v1/featurize.py", Body=b"print()")
    aws.s3.put_object(Bucket=BUCKET, Key="raw/batch=1/Kiwi/a.jpg", Body=b"a")
    aws.s3.put_object(Bucket=BUCKET, Key="raw/batch=1/Pêche/b.jpg", Body=b"b")
    f = s3sync.stage_down(hook, f"s3://{BUCKET}/code/v1/featurize.py", tmp_path / "f" / "job.py")
    assert f.read_bytes() == b"print()"
    d = s3sync.stage_down(hook, f"s3://{BUCKET}/raw/batch=1/", tmp_path / "raw")
    assert sorted(p.relative_to(d).as_posix() for p in d.rglob("*.jpg")) == [
        "Kiwi/a.jpg",
        "Pêche/b.jpg",
    ]


def test_code_bundle_is_reproducible_and_versioned_by_content(tmp_path):
    a = build_bundle(ROOT / "spark_jobs", tmp_path / "a")
    b = build_bundle(ROOT / "spark_jobs", tmp_path / "b")
    assert a.version == b.version and len(a.version) == 12
    assert set(a.files) == {
        "fruits_spark.zip",
        "featurize.py",
        "reduce.py",
        "bootstrap.sh",
        "requirements.txt",
    }
    with zipfile.ZipFile(a.folder / "fruits_spark.zip") as zf:
        names = zf.namelist()
    sources = sorted((ROOT / "spark_jobs" / "fruits_spark").glob("*.py"))
    assert names == [f"fruits_spark/{p.name}" for p in sources]
    requirements = (a.folder / "requirements.txt").read_text()
    assert "tensorflow-cpu==" in requirements and "pandas==" in requirements
    assert "pyspark" not in requirements  # EMR brings its own Spark
    # a changed source is a new version
    jobs = tmp_path / "jobs"
    (jobs / "fruits_spark").mkdir(parents=True)
    for p in sources:
        (jobs / "fruits_spark" / p.name).write_bytes(p.read_bytes())
    for script in ("featurize.py", "reduce.py", "requirements.txt"):
        (jobs / script).write_bytes((ROOT / "spark_jobs" / script).read_bytes())
    assert build_bundle(jobs, tmp_path / "c").version == a.version
    (jobs / "fruits_spark" / "jobs.py").write_text("# changed\n")
    assert build_bundle(jobs, tmp_path / "d").version != a.version
    assert (
        build_zip(jobs, tmp_path / "z.zip").read_bytes()
        == build_zip(jobs, tmp_path / "y.zip").read_bytes()
    )


def test_steps_run_featurize_then_reduce_on_the_batch():
    featurize, reduce = build_steps(
        bucket=BUCKET, batch="2026-11-24", run_key=KEY, code=CODE, run=RUN
    )
    for step in (featurize, reduce):
        assert step["ActionOnFailure"] == "CANCEL_AND_WAIT"
        assert step["HadoopJarStep"]["Jar"] == "command-runner.jar"
        args = step["HadoopJarStep"]["Args"]
        assert args[:5] == [
            "spark-submit",
            "--deploy-mode",
            "cluster",
            "--py-files",
            CODE["py_files"],
        ]
    f_args, r_args = featurize["HadoopJarStep"]["Args"], reduce["HadoopJarStep"]["Args"]
    # the run's own staging prefix, never the published runs/batch=<date>/
    run = f"s3://{BUCKET}/runs/_staging/batch=2026-11-24/{KEY}/"
    assert f_args[5:] == [
        CODE["featurize"],
        "--input", f"s3://{BUCKET}/raw/batch=2026-11-24/",
        "--output", run + "features/",
        "--rejected", run + "rejected/",
        "--model", "vgg16",
        "--weights", CODE["weights"],
        "--image-size", "96",
    ]  # fmt: skip
    assert r_args[5:] == [
        CODE["reduce"],
        "--input", run + "features/",
        "--output", run + "pca/",
        "--report", run + "report/",
        "--variance", "0.9",
        "--rejected", run + "rejected/",
    ]  # fmt: skip


def test_local_reading_of_the_steps(tmp_path):
    steps = build_steps(bucket=BUCKET, batch="2026-11-24", run_key=KEY, code=CODE, run=RUN)
    local = localize(
        steps,
        master_url="spark://127.0.0.1:7123",
        spark_submit="/bin/spark-submit",
        s3_root=tmp_path,
    )
    featurize, reduce = local.commands
    assert featurize[:3] == ["/bin/spark-submit", "--master", "spark://127.0.0.1:7123"]
    assert (
        "cluster" not in featurize and featurize[featurize.index("--deploy-mode") + 1] == "client"
    )
    assert not any(a.startswith("s3://") for a in featurize + reduce)
    root = tmp_path / BUCKET
    assert featurize[featurize.index("--input") + 1] == str(root / "raw" / "batch=2026-11-24")
    # inputs: code, weights, raw batch; never an output of an earlier step
    assert set(local.inputs) == {
        CODE["py_files"],
        CODE["featurize"],
        CODE["reduce"],
        CODE["weights"],
        f"s3://{BUCKET}/raw/batch=2026-11-24/",
    }
    run = f"s3://{BUCKET}/runs/_staging/batch=2026-11-24/{KEY}/"
    assert set(local.outputs) == {run + n + "/" for n in ("features", "rejected", "pca", "report")}
    assert reduce[reduce.index("--input") + 1] == str(local.outputs[run + "features/"])
    assert reduce[reduce.index("--rejected") + 1] == str(local.outputs[run + "rejected/"])
    with pytest.raises(ValueError, match="only spark-submit"):
        localize(
            [{"Name": "x", "HadoopJarStep": {"Jar": "s3://b/x.jar", "Args": ["java"]}}],
            master_url="spark://h:1",
            spark_submit="s",
            s3_root=tmp_path,
        )


def test_job_flow_request(tmp_path):
    base = {"FRUITS_BUCKET": BUCKET}
    request = job_flow(load_settings(base), name="fruits run", code=CODE)
    assert request["ReleaseLabel"].startswith("emr-7.")
    assert request["Applications"] == [{"Name": "Spark"}]
    assert request["LogUri"] == f"s3://{BUCKET}/logs/emr/"
    assert request["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
    assert "Ec2SubnetId" not in request["Instances"]
    roles = [g["InstanceRole"] for g in request["Instances"]["InstanceGroups"]]
    assert roles == ["MASTER", "CORE"]  # no spot task nodes unless asked
    assert request["AutoTerminationPolicy"] == {"IdleTimeout": 3600}
    (action,) = request["BootstrapActions"]
    assert action["ScriptBootstrapAction"] == {
        "Path": CODE["bootstrap"],
        "Args": [CODE["requirements"], "/usr/bin/python3.11"],
    }
    env = next(c for c in request["Configurations"] if c["Classification"] == "spark-env")
    exported = env["Configurations"][0]["Properties"]
    assert exported["PYSPARK_PYTHON"] == exported["PYSPARK_DRIVER_PYTHON"] == "/usr/bin/python3.11"
    tags = {t["Key"]: t["Value"] for t in request["Tags"]}
    assert tags["project"] == "fruits-pipeline"  # the Airflow role's RunJobFlow condition
    assert tags["for-use-with-amazon-emr-managed-policies"] == "true"
    assert "{{" not in str(request)

    private = job_flow(
        load_settings(
            {
                **base,
                "FRUITS_EMR_SUBNET": "subnet-0abc",
                "FRUITS_EMR_TASK_SPOT_COUNT": "3",
                "FRUITS_EMR_TAGS": "team=vision,project=other",
            }
        ),
        name="n",
        code=CODE,
    )
    assert private["Instances"]["Ec2SubnetId"] == "subnet-0abc"
    task_group = private["Instances"]["InstanceGroups"][-1]
    assert (task_group["InstanceRole"], task_group["Market"], task_group["InstanceCount"]) == (
        "TASK",
        "SPOT",
        3,
    )
    tags = {t["Key"]: t["Value"] for t in private["Tags"]}
    assert tags["team"] == "vision" and tags["project"] == "fruits-pipeline"


def test_step_log_location_follows_the_log_uri():
    assert step_log_key("s3n://b/logs/emr/", "j-1", "s-2") == (
        "b",
        "logs/emr/j-1/steps/s-2/stderr.gz",
    )
    assert step_log_key("s3://b/logs", "j-1", "s-2") == ("b", "logs/j-1/steps/s-2/stderr.gz")


def test_bootstrap_never_installs_pyspark():
    script = (ROOT / "plugins" / "fruits" / "emr" / "bootstrap.sh").read_text()
    assert "python3.11" in script and "pip install" in script
    assert "pip install pyspark" not in script


def test_paths_in_settings_are_relative_to_the_project(tmp_path):
    s = load_settings({"FRUITS_INCOMING": "data/x", "FRUITS_SCRATCH": str(tmp_path)})
    assert s.incoming == ROOT / "data" / "x"
    assert s.scratch == tmp_path
    assert load_settings({}).compute == "local"
    for bad in (
        {"FRUITS_COMPUTE": "k8s"},
        {"FRUITS_VARIANCE": "1.5"},
        {"FRUITS_IMAGE_SIZE": "16"},
        {"FRUITS_MODEL": "resnet"},
        {"FRUITS_EMR_CORE_COUNT": "two"},
        {"FRUITS_EMR_TAGS": "novalue"},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            load_settings(bad)
    assert Path(s.jobs_dir, "featurize.py").is_file()


def test_upload_code_ships_the_weights_file_a_run_needs(hook, aws, tmp_path, monkeypatch):
    from fruits.jobcode import upload_code

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    cached = tmp_path / "keras" / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"imagenet vgg16")
    mine = tmp_path / "mine.weights.h5"
    mine.write_bytes(b"fine-tuned")
    settings = load_settings({"FRUITS_BUCKET": BUCKET})

    def emr(run):
        return upload_code(hook, settings, run, ship_imagenet=True)

    def local(run):
        return upload_code(hook, settings, run, ship_imagenet=False)

    code = emr({"weights": "imagenet", "model": "vgg16"})
    prefix = f"code/{code['version']}/"
    assert code["prefix"] == f"s3://{BUCKET}/{prefix}"
    assert code["weights"] == f"s3://{BUCKET}/{prefix}weights/{cached.name}"
    assert aws.read(f"{prefix}weights/{cached.name}") == b"imagenet vgg16"
    # the local cluster reads Keras' cache itself; a file of one's own is uploaded
    assert local({"weights": "imagenet", "model": "vgg16"})["weights"] == "imagenet"
    code = local({"weights": str(mine), "model": "vgg16"})
    assert aws.read(f"{prefix}weights/mine.weights.h5") == b"fine-tuned"
    assert f"{prefix}weights/{cached.name}" in aws.keys(prefix)  # other weights stay
    s3_weights = "s3://elsewhere/w.h5"
    assert emr({"weights": s3_weights, "model": "vgg16"})["weights"] == s3_weights
    assert sorted(k.removeprefix(prefix) for k in aws.keys(prefix)) == [
        "bootstrap.sh",
        "featurize.py",
        "fruits_spark.zip",
        "reduce.py",
        "requirements.txt",
        "weights/mine.weights.h5",
        f"weights/{cached.name}",
    ]


def test_images_are_counted_by_the_jobs_rules(tmp_path):
    from fruits.jobcode import count_images

    assert count_images(tmp_path / "missing") == 0
    for name in ("Kiwi/a.jpg", "Kiwi/B.PNG", "Kiwi/.hidden.jpg", "_tmp/x.jpg", "Kiwi/notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert count_images(tmp_path) == 2


def test_s3_errors_a_retry_cannot_fix_are_told_apart():
    """upload_batch / upload_code fail at once on these, retry on the others."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError, EndpointConnectionError

    def wrapped(code: str) -> Exception:  # boto3's upload_file chains the ClientError
        try:
            try:
                raise ClientError({"Error": {"Code": code, "Message": code}}, "PutObject")
            except ClientError as exc:
                raise S3UploadFailedError(f"Failed to upload: {exc}")  # noqa: B904
        except S3UploadFailedError as outer:
            return outer

    assert s3sync.error_code(wrapped("AccessDenied")) == "AccessDenied"
    assert s3sync.is_permanent(wrapped("AccessDenied"))
    assert s3sync.is_permanent(wrapped("NoSuchBucket"))
    assert not s3sync.is_permanent(wrapped("SlowDown"))  # throttled: a retry helps
    assert not s3sync.is_permanent(wrapped("InternalError"))
    assert not s3sync.is_permanent(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))


def test_run_keys_are_key_safe_unique_and_stay_under_runs():
    from fruits.layout import new_run_key, staging_prefix

    run_id = "manual__2026-11-24T00:00:00+00:00"
    a, b = new_run_key(run_id), new_run_key(run_id)
    assert a != b  # every try of plan_run stages somewhere new
    assert a.startswith("manual__2026-11-24T00-00-00-00-00-")
    assert staging_prefix("2026-11-24", a) == f"runs/_staging/batch=2026-11-24/{a}/"
    assert staging_prefix("2026-11-24") == "runs/_staging/batch=2026-11-24/"
    assert new_run_key("../../x y/é").startswith("x-y-")
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(ValueError, match="not a run key"):
            staging_prefix("2026-11-24", bad)
