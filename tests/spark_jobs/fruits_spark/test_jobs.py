"""The jobs as users run them: spark-submit, with the shared package shipped as --py-files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from job_support import BIN, JOBS, spark_submit_env

from fruits.dev.sample_batch import write_bad_files, write_batch
from fruits.storage.code_bundle import build_zip


@pytest.fixture(scope="module")
def py_files(tmp_path_factory) -> Path:
    """The zip the DAG uploads to code/<version>/, built by the DAG's own code."""
    return build_zip(JOBS, tmp_path_factory.mktemp("code") / "fruits_spark.zip")


def spark_submit(py_files: Path, job: str, *args: str) -> subprocess.CompletedProcess:
    env = spark_submit_env()
    cmd = [str(BIN / "spark-submit"), "--master", "local[2]",
           "--conf", "spark.ui.enabled=false", "--py-files", str(py_files),
           str(JOBS / job), *args]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_featurize_then_reduce_on_a_sample_batch(py_files, tmp_path):
    batch = tmp_path / "incoming" / "2026-11-24"
    write_batch(batch, per_label=5)
    bad = write_bad_files(batch)
    out = tmp_path / "runs"
    done = spark_submit(
        py_files, "featurize.py",
        "--input", str(batch), "--output", str(out / "features"),
        "--rejected", str(out / "rejected"), "--weights", "random",
        "--image-size", "64", "--csv", str(out / "csv"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "featurize: 30 featurized, 4 rejected, 1 skipped" in done.stdout
    features = pd.read_parquet(out / "features")
    assert len(features) == 30 and features.label.nunique() == 6
    assert len(pd.read_parquet(out / "rejected")) == len(bad)

    reduced = spark_submit(
        py_files, "reduce.py",
        "--input", str(out / "features"), "--output", str(out / "pca"),
        "--report", str(out / "report"), "--variance", "0.9",
        "--rejected", str(out / "rejected"),
    )  # fmt: skip
    assert reduced.returncode == 0, reduced.stderr[-3000:]
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["n_rows"] == 30 and report["n_features"] == 1280
    assert report["model"] == "mobilenetv2" and report["weights"] == "random"
    assert report["cumulative_variance"][-1] >= 0.9
    assert report["labels"] == {label: 5 for label in features.label.unique()}
    # nothing lost silently: the report lists every rejected file with its reason
    assert report["n_rejected"] == 4 and report["rejected_by_label"] == {"Apple Red 1": 4}
    listed = {r["path"].rsplit("/", 1)[1]: r["error"] for r in report["rejected"]}
    assert set(listed) == {p.rsplit("/", 1)[1] for p in bad}
    assert listed["empty.jpg"] == "empty file"
    pca = pd.read_parquet(out / "pca")
    assert sorted(pca.path) == sorted(features.path)
    assert pca.pca.map(len).eq(report["k"]).all()


def test_featurize_without_images_exits_2_with_a_message(py_files, tmp_path):
    (tmp_path / "in" / "Kiwi").mkdir(parents=True)
    done = spark_submit(
        py_files, "featurize.py", "--input", str(tmp_path / "in"),
        "--output", str(tmp_path / "f"), "--rejected", str(tmp_path / "r"),
    )  # fmt: skip
    assert done.returncode == 2
    # spark-submit's PythonRunner merges the driver's stderr into its stdout
    assert "error: --input" in done.stdout and "no image files found" in done.stdout
    assert not (tmp_path / "f").exists()


def test_bad_arguments_exit_2_before_spark_starts(py_files, tmp_path):
    done = spark_submit(
        py_files, "featurize.py", "--input", "x", "--output", "y", "--rejected", "z",
        "--model", "resnet",
    )  # fmt: skip
    assert done.returncode == 2
    assert "--model: invalid choice: 'resnet'" in done.stdout
