"""A whole ``emr`` run from the MWAA bundle, on moto: the DAG and every task in a
subprocess that sees only the bundle (its plugins and dags) behind the import guard,
the batch in another bucket (``FRUITS_INCOMING=s3://...``), the steps played by the
tests' EMR driver (moto never finishes one)."""

from __future__ import annotations

import json
import zipfile
from io import BytesIO

import pytest
from dag_support import BUCKET

from fruits.dev.sample_batch import write_bad_files, write_batch

pytestmark = pytest.mark.slow

DATE = "2026-11-24"
LANDING = "fruits-landing"
CONF = {"weights": "random", "image_size": 64}


@pytest.fixture
def landing(aws, tmp_path) -> list[str]:
    """A batch in another bucket, as an upstream system drops it; its keys."""
    folder = tmp_path / "batch"
    write_batch(folder, per_label=2, labels=["Banana", "Pêche"])
    write_bad_files(folder, label="Banana")
    aws.s3.create_bucket(Bucket=LANDING)
    keys = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        keys.append(f"landing/{DATE}/{path.relative_to(folder).as_posix()}")
        aws.s3.put_object(Bucket=LANDING, Key=keys[-1], Body=path.read_bytes())
    return keys


def test_an_emr_run_from_the_bundle_publishes_a_batch_from_s3(
    mwaa_home, bundle_python, airflow_db, aws, emr_steps, landing
):
    emr_steps("complete")
    settings = {
        "FRUITS_COMPUTE": "emr",
        "FRUITS_BUCKET": BUCKET,
        "FRUITS_INCOMING": f"s3://{LANDING}/landing",
        "FRUITS_POKE_INTERVAL": "1",
        "FRUITS_EMR_LOG_WAIT": "10",
        "FRUITS_STEP_TIMEOUT_BASE": "600",
    }
    report = bundle_python(mwaa_home, airflow_db, settings, "--run", DATE, json.dumps(CONF))

    assert report["state"] == "success", report["tasks"]
    assert set(report["tasks"].values()) == {"success"}, report["tasks"]
    assert report["asked"] == []  # no task reached for TensorFlow, PySpark or the jobs
    assert report["code"] == str(mwaa_home / "plugins" / "fruits" / "tasks.py")
    (cluster,) = aws.clusters()
    assert cluster["Status"]["State"] == "TERMINATED"

    # the batch came from the landing bucket, copied into raw/ as it was
    raw = sorted(aws.keys(f"raw/batch={DATE}/"))
    assert raw == sorted(f"raw/batch={DATE}/{k.split(f'{DATE}/', 1)[1]}" for k in landing)

    # the job code the cluster got is the bundle's spark_jobs/, zipped by upload_code
    (bootstrap,) = aws.emr.list_bootstrap_actions(ClusterId=cluster["Id"])["BootstrapActions"]
    code = bootstrap["ScriptPath"].removesuffix("bootstrap.sh").removeprefix(f"s3://{BUCKET}/")
    zipped = zipfile.ZipFile(BytesIO(aws.read(code + "fruits_spark.zip"))).namelist()
    assert "fruits_spark/inference/images.py" in zipped
    bundled = mwaa_home / "plugins" / "spark_jobs"
    assert aws.read(code + "featurize.py") == (bundled / "featurize.py").read_bytes()
    steps = aws.emr.list_steps(ClusterId=cluster["Id"])["Steps"][::-1]
    assert [s["Name"] for s in steps] == [f"featurize batch={DATE}", f"reduce batch={DATE}"]

    # published: the report and the marker, written last
    report = json.loads(aws.read(f"runs/batch={DATE}/report/report.json"))
    assert report["n_rows"] == 4  # the batch's good images, featurized for real
    marker = json.loads(aws.read(f"runs/batch={DATE}/_SUCCESS"))
    assert marker["batch"] == DATE
