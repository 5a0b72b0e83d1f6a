"""A batch read from another bucket (``FRUITS_INCOMING=s3://...``) gives the same
published outputs as the same batch read from a folder: the ``local`` backend, real
Spark and jobs, moto's S3. The S3 batch reaches raw/ by server-side copies only."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dag_support import BUCKET, logical, task_states
from job_support import assert_same_features

from fruits.dev.sample_batch import write_bad_files, write_batch

pytestmark = [pytest.mark.usefixtures("airflow_db"), pytest.mark.slow]

DATE = "2026-11-24"
RUN = f"runs/batch={DATE}/"
SOURCE_BUCKET = "landing-zone"
CONF = {"weights": "random", "image_size": 64, "variance": 0.9}


def published(aws, output: str) -> pd.DataFrame:
    keys = sorted(k for k in aws.keys(f"{RUN}{output}/") if k.endswith(".parquet"))
    assert keys, f"nothing published under {RUN}{output}/"
    frame = pd.concat([pd.read_parquet(io.BytesIO(aws.read(k))) for k in keys])
    # the image's name under raw/batch=<date>/, wherever the cluster read it from
    frame["image"] = frame["path"].str.extract(r"batch=[^/]+/(.+)$", expand=False)
    return frame.sort_values("image").reset_index(drop=True)


def run_outputs(load_dag, aws) -> dict[str, pd.DataFrame]:
    dag_run = load_dag("local").test(logical_date=logical(DATE), run_conf=CONF)
    assert str(dag_run.state) == "success", task_states(dag_run)
    outputs = {name: published(aws, name) for name in ("features", "pca", "rejected")}
    aws.s3.delete_object(Bucket=BUCKET, Key=f"{RUN}_SUCCESS")
    return outputs


def test_a_batch_from_another_bucket_publishes_what_the_same_folder_does(
    load_dag, fruits_env, aws, monkeypatch
):
    folder = fruits_env / DATE
    write_batch(folder, per_label=3, labels=["Kiwi", "Lime"], seed=7)
    write_bad_files(folder)  # undecodable files: rejected from S3 as from a folder
    from_folder = run_outputs(load_dag, aws)

    aws.s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in aws.keys("raw/")]})
    aws.s3.create_bucket(Bucket=SOURCE_BUCKET)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        key = f"landing/{DATE}/{path.relative_to(folder).as_posix()}"
        aws.s3.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=path.read_bytes())
    monkeypatch.setenv("FRUITS_INCOMING", f"s3://{SOURCE_BUCKET}/landing")
    for path in sorted(folder.rglob("*"), reverse=True):  # the worker's disk has nothing
        path.unlink() if path.is_file() else path.rmdir()
    folder.rmdir()
    from_s3 = run_outputs(load_dag, aws)

    assert sorted(aws.keys("raw/")) == sorted(
        f"raw/batch={DATE}/{k.split(f'{DATE}/', 1)[1]}"
        for k in (o["Key"] for o in aws.s3.list_objects_v2(Bucket=SOURCE_BUCKET)["Contents"])
    )
    for name in ("features", "pca", "rejected"):
        a, b = from_folder[name], from_s3[name]
        assert list(a["image"]) == list(b["image"]), name
        assert list(a["label"]) == list(b["label"]), name
    assert len(from_s3["features"]) == 6 and len(from_s3["rejected"]) > 0
    assert_same_features(
        np.stack(from_s3["features"]["features"]), np.stack(from_folder["features"]["features"])
    )
    assert_same_features(np.stack(from_s3["pca"]["pca"]), np.stack(from_folder["pca"]["pca"]))
    assert not Path(fruits_env / DATE).exists()
