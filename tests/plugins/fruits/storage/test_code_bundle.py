"""The job code bundle: reproducible, versioned by content, shipped with the weights a run needs."""

from __future__ import annotations

import zipfile

from dag_support import BUCKET, ROOT

from fruits.settings import load_settings
from fruits.storage.code_bundle import build_bundle, build_zip


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
    package = ROOT / "spark_jobs" / "fruits_spark"
    sources = sorted(package.rglob("*.py"))
    assert names == [f"fruits_spark/{p.relative_to(package).as_posix()}" for p in sources]
    assert "fruits_spark/inference/models.py" in names  # the subpackages travel too
    requirements = (a.folder / "requirements.txt").read_text()
    assert "ai-edge-litert==" in requirements and "pandas==" in requirements
    assert "tensorflow" not in requirements and "keras" not in requirements
    assert "pyspark" not in requirements  # EMR brings its own Spark
    # a changed source is a new version
    jobs = tmp_path / "jobs"
    (jobs / "fruits_spark").mkdir(parents=True)
    for p in sources:
        copy = jobs / "fruits_spark" / p.relative_to(package)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(p.read_bytes())
    for script in ("featurize.py", "reduce.py", "requirements.txt"):
        (jobs / script).write_bytes((ROOT / "spark_jobs" / script).read_bytes())
    # the pins beside the jobs' folder, as in the repository and in a bundle
    (tmp_path / "constraints.txt").write_bytes((ROOT / "constraints.txt").read_bytes())
    assert build_bundle(jobs, tmp_path / "c").version == a.version
    (jobs / "fruits_spark" / "jobs.py").write_text("# changed\n")
    assert build_bundle(jobs, tmp_path / "d").version != a.version
    assert (
        build_zip(jobs, tmp_path / "z.zip").read_bytes()
        == build_zip(jobs, tmp_path / "y.zip").read_bytes()
    )


def test_upload_code_ships_the_weights_file_a_run_needs(hook, aws, tmp_path, monkeypatch):
    from fruits.storage.code_bundle import upload_code
    from fruits.storage.weights import weights_uri

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

    # remote nodes read the staged copy (make stage-weights), never the worker's cache
    code = emr({"weights": "imagenet", "model": "vgg16"})
    prefix = f"code/{code['version']}/"
    assert code["prefix"] == f"s3://{BUCKET}/{prefix}"
    assert code["weights"] == weights_uri(BUCKET, "vgg16")
    assert not [k for k in aws.keys("code/") if k.endswith(cached.name)]  # nothing shipped
    # the local cluster reads Keras' cache itself; a file of one's own is uploaded
    assert local({"weights": "imagenet", "model": "vgg16"})["weights"] == "imagenet"
    code = local({"weights": str(mine), "model": "vgg16"})
    assert code["weights"] == f"s3://{BUCKET}/{prefix}weights/mine.weights.h5"
    assert aws.read(f"{prefix}weights/mine.weights.h5") == b"fine-tuned"
    s3_weights = "s3://elsewhere/w.h5"
    assert emr({"weights": s3_weights, "model": "vgg16"})["weights"] == s3_weights
    assert sorted(k.removeprefix(prefix) for k in aws.keys(prefix)) == [
        "bootstrap.sh",
        "featurize.py",
        "fruits_spark.zip",
        "reduce.py",
        "requirements.txt",
        "weights/mine.weights.h5",
    ]


def test_images_are_counted_by_the_jobs_rules(tmp_path):
    from fruits.storage.batches import count_images

    assert count_images(tmp_path / "missing") == 0
    for name in ("Kiwi/a.jpg", "Kiwi/B.PNG", "Kiwi/.hidden.jpg", "_tmp/x.jpg", "Kiwi/notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert count_images(tmp_path) == 2
