"""The reduce job on a local SparkSession, checked against numpy's SVD; its report; its CLI."""

from __future__ import annotations

import io
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import reduce as reduce_job
from job_support import LABELS, ROOT, low_rank_features
from PIL import Image
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from fruits.clusters.local.spark_install import spark_bin
from fruits.clusters.local.sparkenv import spark_env
from fruits_spark.jobs import JobError
from fruits_spark.pca import passes as pca_passes
from fruits_spark.pca import report
from fruits_spark.pca.linalg import choose_k

pytestmark = pytest.mark.spark

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METADATA = {
    "model": "mobilenetv2",
    "weights": "random",
    "weights_sha256": "ab" * 32,
    "image_size": 100,
    "n_features": 50,
}


# --- data and an independent reference ---------------------------------------------------


def features_df(spark, x: np.ndarray, partitions: int = 4, metadata: dict | None = None):
    rows = [
        (f"file:/in/{LABELS[i % 5]}/{i:04d}.jpg", LABELS[i % 5], x[i].tolist())
        for i in range(len(x))
    ]
    df = spark.createDataFrame(rows, "path string, label string, features array<float>")
    if metadata is not None:
        df = df.withColumn("features", F.col("features").alias("features", metadata=metadata))
    return df.repartition(partitions)


class SVDReference:
    """numpy's SVD of the mean-centred matrix (the float32 values, in float64)."""

    def __init__(self, x: np.ndarray):
        x = x.astype(np.float64)
        self.centred = x - x.mean(axis=0)
        u, s, vt = np.linalg.svd(self.centred, full_matrices=False)
        self.ratios = s**2 / np.sum(s**2)
        self.scores = u * s  # projections, up to the sign of each column
        self.vt = vt

    def k_for(self, variance: float) -> int:
        return int(np.argmax(np.cumsum(self.ratios) >= variance)) + 1

    def flipped_components(self) -> np.ndarray:
        """The rows of Vt, each signed so its largest-|value| entry is positive."""
        signs = np.array([np.sign(row[np.argmax(np.abs(row))]) for row in self.vt])
        return self.vt * signs[:, None]


def assert_equal_up_to_column_sign(actual: np.ndarray, expected: np.ndarray, rel: float):
    assert actual.shape == expected.shape
    atol = rel * np.abs(expected).max()
    for j in range(expected.shape[1]):
        sign = 1.0 if np.dot(actual[:, j], expected[:, j]) >= 0 else -1.0
        np.testing.assert_allclose(
            sign * actual[:, j], expected[:, j], atol=atol, err_msg=f"column {j}"
        )


def pca_matrix(df) -> np.ndarray:
    """The ``pca`` column as a matrix, rows in the order of their file numbers."""
    rows = df.orderBy(F.substring_index("path", "/", -1)).select("pca").collect()
    return np.array([r["pca"] for r in rows], dtype=np.float64)


@pytest.fixture(scope="module")
def synthetic():
    return low_rank_features(200, 50, rank=6, seed=7)


@pytest.fixture(scope="module")
def synthetic_df(spark, synthetic):
    df = features_df(spark, synthetic, partitions=5, metadata=METADATA).cache()
    yield df
    df.unpersist()


@pytest.fixture(scope="module")
def reference(synthetic):
    return SVDReference(synthetic)


def write_parquet(df, path: Path) -> str:
    df.write.mode("overwrite").parquet(str(path))
    return str(path)


def job_args(tmp_path: Path, input_uri: str, *extra: str):
    return reduce_job.parse_args(
        [
            "--input",
            input_uri,
            "--output",
            str(tmp_path / "pca"),
            "--report",
            str(tmp_path / "report"),
            *extra,
        ]
    )


def assert_png(data: bytes, min_size=(300, 200)) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC
    with Image.open(io.BytesIO(data)) as img:
        img.verify()
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG"
        assert img.width >= min_size[0] and img.height >= min_size[1], img.size
        assert img.width <= 5000 and img.height <= 5000, img.size
        return img.size


# --- fit and project -----------------------------------------------------------------------


def test_fit_pca_matches_numpy_svd(synthetic_df, synthetic, reference):
    # 5 partitions merged 2 at a time: two rounds of merges on the executors.
    model = pca_passes.fit_pca(synthetic_df, fan_in=2)

    assert (model.n_rows, model.n_features) == (200, 50)
    np.testing.assert_allclose(model.mean, synthetic.astype(np.float64).mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(model.explained_variance_ratio, reference.ratios, atol=1e-6)
    np.testing.assert_allclose(
        model.explained_variance,
        reference.ratios * reference.centred.var(axis=0, ddof=1).sum(),
        rtol=1e-6,
    )
    # Components equal numpy's up to sign (well-separated leading ones).
    for i in range(6):
        assert abs(np.dot(model.components[i], reference.vt[i])) == pytest.approx(1.0, abs=1e-8)


def test_fit_is_the_same_for_any_partitioning(spark, synthetic):
    one = pca_passes.fit_pca(features_df(spark, synthetic, partitions=1))
    many = pca_passes.fit_pca(features_df(spark, synthetic, partitions=11), fan_in=3)
    np.testing.assert_allclose(
        many.explained_variance, one.explained_variance, rtol=1e-9, atol=1e-12
    )
    np.testing.assert_allclose(many.components[:6], one.components[:6], atol=1e-9)


def test_the_driver_reads_one_summary_whatever_the_partitions(spark, synthetic):
    """The executors merge the partitions' summaries down to one row in one partition:
    the driver never holds more than one n_features^2 summary."""
    for partitions, fan_in in ((1, 8), (11, 3), (40, 8)):
        rows = pca_passes.summary_rows(
            features_df(spark, synthetic, partitions=partitions), fan_in=fan_in
        )
        assert rows.rdd.getNumPartitions() == 1
        (row,) = rows.collect()
        assert row["n"] == len(synthetic)


def test_project_matches_numpy_svd(synthetic_df, reference):
    model = pca_passes.fit_pca(synthetic_df)
    projected = pca_passes.project(synthetic_df, model, 6)

    assert projected.columns == ["path", "label", "pca"]
    assert projected.schema["pca"].dataType.simpleString() == "array<float>"
    assert_equal_up_to_column_sign(pca_matrix(projected), reference.scores[:, :6], rel=1e-3)


def test_project_uses_the_documented_sign_convention(spark, synthetic_df, synthetic, reference):
    model = pca_passes.fit_pca(synthetic_df)
    k = 4
    expected_values = reference.centred @ reference.flipped_components()[:k].T
    paths = [f"file:/in/{LABELS[i % 5]}/{i:04d}.jpg" for i in range(len(synthetic))]
    expected = spark.createDataFrame(
        [
            (p, LABELS[i % 5], expected_values[i].astype(np.float32).tolist())
            for i, p in enumerate(paths)
        ],
        "path string, label string, pca array<float>",
    )
    scale = float(np.abs(expected_values).max())
    assertDataFrameEqual(
        pca_passes.project(synthetic_df, model, k), expected, rtol=1e-3, atol=1e-4 * scale
    )


def test_fewer_rows_than_features(spark):
    x = low_rank_features(10, 1280, rank=3, seed=11)
    df = features_df(spark, x, partitions=3)
    ref = SVDReference(x)
    model = pca_passes.fit_pca(df)

    assert model.components.shape == (10, 1280)  # min(n_rows, n_features) components
    np.testing.assert_allclose(model.explained_variance_ratio, ref.ratios, atol=1e-6)
    assert model.explained_variance_ratio[-1] < 1e-8  # centring removes one dimension
    k = choose_k(model.explained_variance_ratio, variance=0.95)
    assert k == ref.k_for(0.95)
    assert_equal_up_to_column_sign(
        pca_matrix(pca_passes.project(df, model, 9)), ref.scores[:, :9], rel=1e-3
    )


# --- the job, in process --------------------------------------------------------------------


@pytest.fixture(params=["driver", "tasks"])
def where(request, monkeypatch) -> str:
    """Where a small local input is reduced: by the driver (the job's way), or in Spark's
    tasks (the way of a large or remote input, forced by a zero-row limit)."""
    if request.param == "tasks":
        monkeypatch.setattr(pca_passes, "DRIVER_ROWS", 0)
    return request.param


@pytest.fixture(scope="module", params=["driver", "tasks"])
def variance_run(request, spark, synthetic_df, tmp_path_factory):
    """One run per way (``where``'s), each test below checking both."""
    tmp = tmp_path_factory.mktemp(f"reduce-{request.param}")
    input_uri = write_parquet(synthetic_df, tmp / "features")
    args = job_args(tmp, input_uri, "--variance", "0.9")
    with pytest.MonkeyPatch.context() as patch:
        if request.param == "tasks":
            patch.setattr(pca_passes, "DRIVER_ROWS", 0)
        return tmp, reduce_job.reduce_features(spark, args)


def spark_jobs_of(spark, work) -> int:
    """How many Spark jobs ``work()`` ran."""
    group = f"count-{id(work)}"
    spark.sparkContext.setJobGroup(group, "counted")
    try:
        work()
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
    return len(spark.sparkContext.statusTracker().getJobIdsForGroup(group))


def test_a_small_local_input_is_reduced_by_the_driver_alike(spark, synthetic_df, tmp_path):
    """A day's batch costs two Spark jobs (the input's schema, the output's write), not
    the tasks' summary, projection and read-backs; output and report are the same."""
    input_uri = write_parquet(synthetic_df, tmp_path / "features")
    runs = {}
    for where, limit in (("driver", pca_passes.DRIVER_ROWS), ("tasks", 0)):
        out = tmp_path / where
        args = job_args(out, input_uri, "--variance", "0.9")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(pca_passes, "DRIVER_ROWS", limit)
            jobs = spark_jobs_of(spark, lambda: runs.setdefault(  # noqa: B023
                where, reduce_job.reduce_features(spark, args)))  # noqa: B023  # fmt: skip
        runs[where + " jobs"] = jobs
    assert runs["driver jobs"] == 2 and runs["tasks jobs"] >= 5, runs
    driver, tasks = (spark.read.parquet(str(tmp_path / w / "pca")) for w in ("driver", "tasks"))
    assert driver.schema == tasks.schema  # the pca column's metadata too
    assert driver.schema["pca"].metadata == tasks.schema["pca"].metadata
    np.testing.assert_allclose(pca_matrix(driver), pca_matrix(tasks), rtol=1e-5, atol=1e-6)
    same = {"n_rows", "n_features", "k", "labels", "model", "weights", "n_components_fitted"}
    assert {key: runs["driver"][key] for key in same} == {key: runs["tasks"][key] for key in same}
    np.testing.assert_allclose(runs["driver"]["explained_variance_ratio"],
                               runs["tasks"]["explained_variance_ratio"], rtol=1e-9)  # fmt: skip
    for figure in ("nn1_accuracy", "silhouette"):
        assert runs["driver"]["separation"][figure] == pytest.approx(
            runs["tasks"]["separation"][figure], abs=1e-6
        )


def test_a_local_folder_of_rejected_rows_is_read_without_a_spark_job(spark, tmp_path):
    rows = [("file:/in/Kiwi/1.jpg", "Kiwi", "cannot identify image file"),
            ("file:/in/x/2.jpg", None, "image file is truncated")]  # fmt: skip
    folder = str(tmp_path / "rejected")
    rejected = spark.createDataFrame(rows, "path string, label string, error string")
    rejected.coalesce(1).write.parquet(folder)
    through_spark = [r.asDict() for r in spark.read.parquet(folder).collect()]
    read = []
    jobs = spark_jobs_of(spark, lambda: read.append(reduce_job.read_rejected(spark, folder)))
    assert (jobs, read) == (0, [through_spark])
    assert reduce_job.read_rejected(spark, None) is None
    no_error = str(tmp_path / "no-error")
    spark.createDataFrame([("p", "l")], "path string, label string").write.parquet(no_error)
    with pytest.raises(JobError, match="^--rejected .*no-error: cannot read Parquet"):
        reduce_job.read_rejected(spark, no_error)


def test_variance_picks_the_smallest_sufficient_k(spark, variance_run, reference):
    tmp, summary = variance_run
    expected_k = reference.k_for(0.9)
    assert (
        np.cumsum(reference.ratios)[expected_k - 2]
        < 0.9
        <= np.cumsum(reference.ratios)[expected_k - 1]
    )
    assert summary["k"] == expected_k

    out = spark.read.parquet(str(tmp / "pca"))
    assert out.columns == ["path", "label", "pca"]
    assert out.select(F.size("pca").alias("n")).distinct().collect() == [(expected_k,)]
    assert_equal_up_to_column_sign(pca_matrix(out), reference.scores[:, :expected_k], rel=1e-3)


def test_output_keeps_every_path_and_label(spark, variance_run, synthetic_df):
    tmp, _ = variance_run
    out = spark.read.parquet(str(tmp / "pca"))
    assertDataFrameEqual(out.select("path", "label"), synthetic_df.select("path", "label"))


def test_output_metadata_names_model_weights_and_k(spark, variance_run):
    tmp, summary = variance_run
    meta = spark.read.parquet(str(tmp / "pca")).schema["pca"].metadata
    assert meta["model"] == "mobilenetv2"
    assert meta["weights"] == "random"
    assert meta["weights_sha256"] == "ab" * 32
    assert meta["k"] == summary["k"]
    assert meta["n_features"] == 50


def test_report_json(variance_run, reference):
    tmp, summary = variance_run
    on_disk = json.loads((tmp / "report" / "report.json").read_text(encoding="utf-8"))
    assert on_disk == summary
    k = reference.k_for(0.9)
    assert on_disk["n_rows"] == 200
    assert on_disk["n_features"] == 50
    assert on_disk["k"] == k
    np.testing.assert_allclose(on_disk["explained_variance_ratio"], reference.ratios[:k], atol=1e-6)
    np.testing.assert_allclose(
        on_disk["cumulative_variance"], np.cumsum(reference.ratios)[:k], atol=1e-6
    )
    assert on_disk["variance_threshold"] == 0.9
    assert on_disk["k_requested"] is None
    assert (on_disk["model"], on_disk["weights"]) == ("mobilenetv2", "random")
    assert on_disk["weights_sha256"] == "ab" * 32
    assert on_disk["labels"] == {label: 40 for label in LABELS}
    # label separation, on the written PCA output, as scikit-learn and brute force see it
    from sklearn.metrics import silhouette_score

    written = pd.read_parquet(tmp / "pca")
    x, labels = np.stack(written["pca"]), written["label"].tolist()
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nn1 = float(np.mean([labels[j] == labels[i] for i, j in enumerate(d.argmin(1))]))
    sep = on_disk["separation"]
    assert (sep["sample_rows"], sep["of_rows"]) == (200, 200)
    assert sep["nn1_accuracy"] == pytest.approx(nn1)
    assert sep["silhouette"] == pytest.approx(silhouette_score(x, labels), abs=1e-6)


def test_report_plots_are_png(variance_run):
    tmp, _ = variance_run
    assert_png((tmp / "report" / "cumulative_variance.png").read_bytes())
    assert_png((tmp / "report" / "pca_scatter.png").read_bytes())


def test_explicit_k_and_missing_metadata(spark, tmp_path, synthetic, where):
    input_uri = write_parquet(
        features_df(spark, synthetic[:60], partitions=2), tmp_path / "features"
    )
    summary = reduce_job.reduce_features(spark, job_args(tmp_path, input_uri, "--k", "1"))

    assert summary["k"] == 1
    assert summary["k_requested"] == 1
    assert summary["variance_threshold"] is None
    assert (summary["model"], summary["weights"], summary["weights_sha256"]) == ("unknown",) * 3
    assert summary["explained_variance_ratio"] == pytest.approx(
        [SVDReference(synthetic[:60]).ratios[0]], abs=1e-6
    )
    out = spark.read.parquet(str(tmp_path / "pca"))
    assert out.count() == 60
    assert out.select(F.size("pca").alias("n")).distinct().collect() == [(1,)]
    assert_png((tmp_path / "report" / "pca_scatter.png").read_bytes())  # k == 1: against zero


def test_k_may_equal_min_rows_features(spark, tmp_path, where):
    x = low_rank_features(10, 1280, rank=3, seed=12)
    input_uri = write_parquet(features_df(spark, x, partitions=2), tmp_path / "features")
    summary = reduce_job.reduce_features(spark, job_args(tmp_path, input_uri, "--k", "10"))
    assert summary["k"] == 10
    assert summary["cumulative_variance"][-1] == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(
        JobError, match=r"--k must be between 1 and min\(n_rows, n_features\) = 10, got 11"
    ):
        reduce_job.reduce_features(spark, job_args(tmp_path, input_uri, "--k", "11"))


# --- errors ----------------------------------------------------------------------------------


def test_rejects_k_larger_than_the_features(spark, tmp_path, synthetic_df, where):
    input_uri = write_parquet(synthetic_df, tmp_path / "features")
    with pytest.raises(
        JobError, match=r"--k must be between 1 and min\(n_rows, n_features\) = 50, got 51"
    ):
        reduce_job.reduce_features(spark, job_args(tmp_path, input_uri, "--k", "51"))
    assert not (tmp_path / "pca").exists()


def test_rejects_empty_input(spark, tmp_path, where):
    empty = spark.createDataFrame([], "path string, label string, features array<float>")
    input_uri = write_parquet(empty, tmp_path / "features")
    with pytest.raises(JobError, match=r"^--input .*features: no rows to reduce"):
        reduce_job.reduce_features(spark, job_args(tmp_path, input_uri))


def test_rejects_missing_input(spark, tmp_path):
    with pytest.raises(JobError, match=r"^--input .*nowhere: cannot read Parquet"):
        reduce_job.reduce_features(spark, job_args(tmp_path, str(tmp_path / "nowhere")))


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (
            [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 2.0]],
            r"different lengths \(from 3 to 4\)",
        ),
        ([[1.0, 2.0], None, [0.0, 1.0]], "1 of 3 rows have null features"),
        ([[1.0, 2.0], [float("nan"), 1.0], [0.0, 1.0]], "1 of 3 rows have null, NaN or infinite"),
        ([[1.0, 2.0], [float("inf"), 1.0], [0.0, None]], "2 of 3 rows have null, NaN or infinite"),
        ([[], [], []], r"empty \(length 0\)"),
    ],
)
def test_rejects_unusable_features(spark, tmp_path, features, message, where):
    df = spark.createDataFrame(
        [(f"p{i}", "x", f) for i, f in enumerate(features)],
        "path string, label string, features array<float>",
    )
    with pytest.raises(JobError, match=message):
        pca_passes.fit_pca(df)
    input_uri = write_parquet(df, tmp_path / "features")
    with pytest.raises(JobError, match=rf"^--input .*features: .*{message}"):
        reduce_job.reduce_features(spark, job_args(tmp_path, input_uri))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--variance", "0"], "--variance must be > 0 and <= 1, got 0.0"),
        (["--variance", "1.5"], "--variance must be > 0 and <= 1, got 1.5"),
        (["--variance", "nan"], "--variance"),
        (["--k", "0"], "--k must be at least 1, got 0"),
    ],
)
def test_parse_args_rejects(tmp_path, extra, message):
    with pytest.raises(JobError, match=message):
        job_args(tmp_path, "in", *extra)


def test_parse_args_defaults_and_exclusive_options(tmp_path, capsys):
    args = job_args(tmp_path, "in")
    assert (args.variance, args.k) == (0.95, None)
    assert job_args(tmp_path, "in", "--k", "3").variance is None
    with pytest.raises(SystemExit) as exc:
        job_args(tmp_path, "in", "--k", "3", "--variance", "0.9")
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


# --- report functions, without Spark ---------------------------------------------------------


def test_report_defaults_unknown_model_and_keeps_first_k():
    built = report.build_report(
        n_rows=4,
        n_features=3,
        k=2,
        explained_variance_ratio=[0.7, 0.2, 0.1],
        explained_variance=[7.0, 2.0, 1.0],
        variance_threshold=0.85,
        k_requested=None,
        features_metadata=None,
        labels={"b": 1, "a": 3},
    )
    assert built["explained_variance_ratio"] == [0.7, 0.2]
    assert built["cumulative_variance"] == pytest.approx([0.7, 0.9])
    assert built["total_variance"] == 10.0
    assert (built["model"], built["weights"], built["weights_sha256"]) == ("unknown",) * 3
    assert list(built["labels"]) == ["a", "b"]
    assert json.loads(report.report_json(built)) == built


def test_plots_render_many_labels_and_one_component():
    rng = np.random.default_rng(0)
    labels = [f"fruit {i % 131}" for i in range(1000)]
    wide = assert_png(report.pca_scatter_png(rng.normal(size=(1000, 2)), labels))
    narrow = assert_png(report.pca_scatter_png(rng.normal(size=(1000, 1)), labels[:1000]))
    assert wide[0] > 800 and narrow[0] > 800  # the legend of 131 labels gets its columns
    assert_png(report.cumulative_variance_png(np.full(1280, 1 / 1280), k=1216, threshold=0.95))
    with pytest.raises(ValueError, match="coords"):
        report.pca_scatter_png(np.zeros((3, 3)), ["a", "b", "c"])


# --- the real CLI ------------------------------------------------------------------------------


def spark_submit(*args: str) -> subprocess.CompletedProcess:
    env = spark_env({"PYTHONPATH": str(ROOT / "spark_jobs")})  # the job imports its package
    cmd = [
        spark_bin("spark-submit"),
        "--master",
        "local[2]",
        "--conf",
        "spark.ui.enabled=false",
        "--conf",
        "spark.driver.host=127.0.0.1",
        str(ROOT / "spark_jobs" / "reduce.py"),
        *args,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.mark.slow
def test_cli_end_to_end(synthetic_df, reference, tmp_path):
    input_uri = write_parquet(synthetic_df, tmp_path / "features")
    out, rep = tmp_path / "pca", tmp_path / "report"
    done = spark_submit(
        "--input", input_uri, "--output", str(out), "--report", f"file://{rep}/", "--k", "3"
    )

    assert done.returncode == 0, done.stderr[-3000:]
    cumulative = np.cumsum(reference.ratios)[2]
    assert re.search(
        rf"^reduce: 200 rows, 50 features -> k=3 \(cumulative variance {cumulative:.4f}\)$",
        done.stdout,
        re.MULTILINE,
    ), done.stdout
    table = pq.read_table(out)
    assert table.column_names == ["path", "label", "pca"]
    assert table.num_rows == 200
    rows = sorted(
        zip(table["path"].to_pylist(), table["pca"].to_pylist(), strict=True),
        key=lambda row: row[0].rsplit("/", 1)[-1],  # the file number: the row of `synthetic`
    )
    assert_equal_up_to_column_sign(
        np.array([r[1] for r in rows]), reference.scores[:, :3], rel=1e-3
    )
    summary = json.loads((rep / "report.json").read_text(encoding="utf-8"))
    assert (summary["k"], summary["k_requested"], summary["model"]) == (3, 3, "mobilenetv2")
    assert_png((rep / "cumulative_variance.png").read_bytes())
    assert_png((rep / "pca_scatter.png").read_bytes())


@pytest.mark.slow
def test_cli_bad_argument_exits_2(tmp_path):
    done = spark_submit(
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "out"),
        "--report",
        str(tmp_path / "r"),
        "--variance",
        "1.5",
    )
    assert done.returncode == 2
    # spark-submit's PythonRunner merges the driver's stderr into its own stdout.
    output = done.stdout + done.stderr
    assert "error: --variance must be > 0 and <= 1, got 1.5" in output
    assert "Traceback" not in output
    assert not (tmp_path / "out").exists()
