"""The featurize job on a local SparkSession: outputs, parity with Keras, bad input."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import featurize
import numpy as np
import pandas as pd
import pytest
from job_support import assert_same_features

from fruits.dev.sample_batch import write_bad_files, write_batch, write_odd_images
from fruits_spark.inference import driver_model, models, workers
from fruits_spark.inference.images import decode_image
from fruits_spark.jobs import JobError

SIZE = 64  # small images keep the CNN cheap; the code path is the same as at 224


def save_weights(model: str, seed: int, path: Path) -> Path:
    """A weights file made independently of the job's own 'random' weights."""
    import keras

    keras.utils.set_random_seed(seed)
    net = keras.applications.MobileNetV2 if model == "mobilenetv2" else keras.applications.VGG16
    net(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3), pooling="avg").save_weights(
        str(path)
    )
    return path


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    return save_weights("mobilenetv2", 7, tmp_path_factory.mktemp("w") / "mnv2.weights.h5")


def job_args(root: Path, out: Path, *extra: str):
    return featurize.parse_args(
        [
            "--input", str(root),
            "--output", str(out / "features"),
            "--rejected", str(out / "rejected"),
            "--image-size", str(SIZE),
            "--batch-size", "8",
            *extra,
        ]
    )  # fmt: skip


@pytest.fixture(scope="module")
def messy_run(spark, tmp_path_factory, weights_file):
    """One run over good, odd and bad files; several tests read its outputs."""
    root = tmp_path_factory.mktemp("messy") / "in"
    good = write_batch(root, per_label=3, labels=["Apple Red 1", "Pêche", "c+d"])
    bad = write_bad_files(root)
    odd = write_odd_images(root)
    nested = root / "Banana" / "more" / "deep.jpg"  # nested folder: label is its parent
    nested.parent.mkdir(parents=True)
    nested.write_bytes(good[0].read_bytes())
    out = tmp_path_factory.mktemp("messy_out")
    args = job_args(root, out, "--weights", str(weights_file), "--csv", str(out / "csv"))
    summary = featurize.run(spark, args)
    return {
        "root": root,
        "out": out,
        "summary": summary,
        "good": good + [nested],
        "bad": bad,
        "odd": odd,
        "features": spark.read.parquet(str(out / "features")),
        "rejected": pd.read_parquet(out / "rejected"),
    }


def relative(path: str, root: Path) -> str:
    return path.split(str(root) + "/", 1)[1]


def test_good_and_odd_images_are_featurized_with_labels_as_on_disk(messy_run):
    rows = messy_run["features"].toPandas()
    root = messy_run["root"]
    expected = {str(p.relative_to(root)) for p in messy_run["good"]}
    expected |= {f"Odd Formats/{name}" for name in messy_run["odd"]}
    assert {relative(p, root) for p in rows.path} == expected
    assert set(rows.label) == {"Apple Red 1", "Pêche", "c+d", "Odd Formats", "more"}
    assert rows.features.map(len).eq(1280).all()
    assert all(np.isfinite(np.stack(rows.features)).all(axis=1))


def test_every_bad_file_is_rejected_with_its_reason(messy_run):
    rejected = messy_run["rejected"]
    root = messy_run["root"]
    by_path = {relative(p, root): e for p, e in zip(rejected.path, rejected.error, strict=True)}
    assert set(by_path) == set(messy_run["bad"])
    reasons = {"truncated": "truncated", "empty": "empty file", "text": "not an image",
               "bomb": "decompression bomb"}  # fmt: skip
    for path, kind in messy_run["bad"].items():
        assert reasons[kind] in by_path[path], (path, by_path[path])
    assert set(rejected.label) == {"Apple Red 1"}


def test_hidden_and_non_image_files_are_skipped_not_rejected(messy_run):
    seen = set(messy_run["rejected"].path) | set(messy_run["features"].toPandas().path)
    assert not any(name in p for p in seen for name in (".DS_Store", "._0_100.jpg", "README.txt"))
    assert messy_run["summary"].skipped == 1  # README.txt; Spark never lists hidden files


def test_the_cnn_runs_once_per_image(messy_run):
    s = messy_run["summary"]
    assert s.featurized == len(messy_run["good"]) + len(messy_run["odd"])
    assert s.rejected == len(messy_run["bad"])
    # zero-byte files never reach the CNN; every other image reaches it exactly once,
    # although three outputs (features, rejected, CSV) were written from the result
    assert s.through_cnn == s.featurized + s.rejected - 1


def test_features_equal_a_plain_keras_predict(messy_run, weights_file):
    rows = messy_run["features"].toPandas().sort_values("path").head(6)
    net = models.build_model("mobilenetv2", SIZE, weights_file)
    arrays = np.stack([decode_image(Path(p.removeprefix("file:")).read_bytes(), SIZE)
                       for p in rows.path])  # fmt: skip
    from keras.applications.mobilenet_v2 import preprocess_input

    expected = net.predict(preprocess_input(arrays.astype("float32")), verbose=0)
    assert_same_features(np.stack(rows.features), expected)


def test_metadata_names_the_model_and_the_weights(messy_run, weights_file):
    meta = messy_run["features"].schema["features"].metadata
    assert meta["model"] == "mobilenetv2"
    assert meta["weights"] == str(weights_file)
    assert meta["weights_sha256"] == hashlib.sha256(weights_file.read_bytes()).hexdigest()
    assert meta["image_size"] == SIZE and meta["n_features"] == 1280
    assert meta["runtime"] == "litert"  # the default, auto, for MobileNetV2


def test_csv_is_wide_with_a_header_and_the_same_values(messy_run):
    files = list((messy_run["out"] / "csv").glob("*.csv"))
    assert len(files) == 1
    csv = pd.read_csv(files[0])
    assert list(csv.columns[:3]) == ["path", "label", "feat_0"]
    assert csv.columns[-1] == "feat_1279"
    parquet = messy_run["features"].toPandas().set_index("path")
    for _, row in csv.head(3).iterrows():
        np.testing.assert_allclose(
            row.iloc[2:].to_numpy(float), parquet.loc[row.path, "features"], rtol=1e-6
        )
        assert row.label == parquet.loc[row.path, "label"]


def test_vgg16_gives_512_features_equal_to_keras(spark, sample_batch, tmp_path):
    weights = save_weights("vgg16", 3, tmp_path / "vgg.weights.h5")
    args = job_args(sample_batch, tmp_path, "--model", "vgg16", "--weights", str(weights))
    summary = featurize.run(spark, args)
    assert summary.featurized == 24 and summary.rejected == 0
    features = spark.read.parquet(str(tmp_path / "features"))
    assert features.schema["features"].metadata["runtime"] == "keras"  # auto, for VGG16
    rows = features.toPandas().sort_values("path").head(4)
    net = models.build_model("vgg16", SIZE, weights)
    arrays = np.stack([decode_image(Path(p.removeprefix("file:")).read_bytes(), SIZE)
                       for p in rows.path])  # fmt: skip
    from keras.applications.vgg16 import preprocess_input

    expected = net.predict(preprocess_input(arrays.astype("float32")), verbose=0)
    assert expected.shape == (4, 512)
    assert_same_features(np.stack(rows.features), expected)


def test_mobilenet_with_imagenet_weights_equals_keras(spark, sample_batch, tmp_path):
    """MobileNet v1 with the real ImageNet weights `make weights` staged in Keras' cache."""
    args = job_args(sample_batch, tmp_path, "--model", "mobilenet", "--weights", "imagenet")
    summary = featurize.run(spark, args)
    assert summary.featurized == 24 and summary.rejected == 0
    rows = spark.read.parquet(str(tmp_path / "features")).toPandas().sort_values("path").head(4)
    net = models.build_model("mobilenet", SIZE, models.imagenet_weights_path("mobilenet"))
    arrays = np.stack([decode_image(Path(p.removeprefix("file:")).read_bytes(), SIZE)
                       for p in rows.path])  # fmt: skip
    from keras.applications.mobilenet import preprocess_input

    expected = net.predict(preprocess_input(arrays.astype("float32")), verbose=0)
    assert expected.shape == (4, 1024)
    assert float(np.abs(expected).max()) > 0.1  # real weights: features of a real scale
    assert_same_features(np.stack(rows.features), expected)
    meta = spark.read.parquet(str(tmp_path / "features")).schema["features"].metadata
    assert (meta["model"], meta["weights"]) == ("mobilenet", "imagenet")


def test_int8_features_stay_close_to_fp32_and_say_so(spark, sample_batch, tmp_path):
    """``--precision int8`` (MobileNet v1, real weights, at 224 as the product converts it):
    a quantized model on LiteRT whose features keep to Keras' float ones, with the
    precision and the fidelity its conversion measured in the features' metadata."""
    args = job_args(sample_batch, tmp_path, "--model", "mobilenet", "--weights", "imagenet",
                    "--precision", "int8", "--image-size", "224")  # fmt: skip
    summary = featurize.run(spark, args)
    assert summary.featurized == 24 and summary.rejected == 0
    frame = spark.read.parquet(str(tmp_path / "features"))
    rows = frame.toPandas().sort_values("path").head(8)
    net = models.build_model("mobilenet", 224, models.imagenet_weights_path("mobilenet"))
    arrays = np.stack([decode_image(Path(p.removeprefix("file:")).read_bytes(), 224)
                       for p in rows.path])  # fmt: skip
    expected = net.predict(models.preprocess("mobilenet", arrays), verbose=0)
    got = np.stack(rows.features)
    cos = (got * expected).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
    assert cos.mean() >= 0.98 and not np.allclose(got, expected, rtol=1e-4), cos
    meta = frame.schema["features"].metadata
    assert (meta["precision"], meta["runtime"]) == ("int8", "litert")
    assert meta["fidelity"]["cosine_mean"] >= 0.98


def test_random_weights_are_seeded(tmp_path):
    import keras

    a = models.random_weights_bytes("mobilenetv2", 32)
    b = models.random_weights_bytes("mobilenetv2", 32)
    nets = []
    for i, data in enumerate((a, b)):
        path = tmp_path / f"{i}.weights.h5"
        path.write_bytes(data)
        nets.append(models.build_model("mobilenetv2", 32, path))
    for wa, wb in zip(nets[0].get_weights(), nets[1].get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    keras.utils.set_random_seed(0)  # not the job's seed: other weights
    other = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3))
    assert not np.array_equal(other.get_weights()[0], nets[0].get_weights()[0])


def test_tensorflow_is_imported_with_scikit_learn_hidden_from_keras():
    """Keras would import scikit-learn (~1 s of every worker's start-up) for wrappers the
    jobs never use; after the import scikit-learn must still work for everyone else."""
    code = (
        "import sys\n"
        "from fruits_spark.inference import models\n"
        "models.import_tensorflow()\n"
        "assert 'keras' in sys.modules and 'tensorflow' in sys.modules\n"
        "assert 'sklearn' not in sys.modules, 'Keras imported scikit-learn'\n"
        "import sklearn.decomposition\n"
        "from keras.src.wrappers import fixes\n"
        "print(fixes.sklearn, sklearn.decomposition.PCA.__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["None", "PCA"]


@pytest.mark.parametrize("runtime", ["litert", "keras"])
def test_model_is_built_once_per_python_worker(spark, weights_file, runtime):
    """Eight tasks, two cores: each reused worker builds the model once, not once per task."""
    prepared = driver_model.prepare(spark, "mobilenetv2", SIZE, str(weights_file), runtime, 1)
    config = prepared.config
    bc = spark.sparkContext.broadcast(prepared.payload)

    def probe(batches):
        import os

        for _ in batches:
            net = workers.get_model(config, bc.value)
            yield pd.DataFrame({"pid": [os.getpid()], "net": [id(net)]})

    out = spark.range(0, 64, numPartitions=8).mapInPandas(probe, "pid long, net long").toPandas()
    assert len(out) >= 8  # every task reported
    per_worker = out.groupby("pid").agg(nets=("net", "nunique"))
    assert (per_worker.nets == 1).all()  # the same model object in every task of a worker
    assert len(per_worker) < len(out)  # workers were reused across tasks


def test_an_input_without_images_is_an_error(spark, tmp_path):
    root = tmp_path / "in" / "Apple"
    root.mkdir(parents=True)
    (root / "notes.txt").write_text("no images here")
    with pytest.raises(JobError, match=r"--input .*no image files found.*1 other files skipped"):
        featurize.run(spark, job_args(tmp_path / "in", tmp_path, "--weights", "random"))
    with pytest.raises(JobError, match="no image files found"):
        featurize.run(spark, job_args(tmp_path / "missing", tmp_path, "--weights", "random"))


def test_an_input_error_destroys_the_models_broadcast(spark, tmp_path, monkeypatch):
    """The model is broadcast beside the listing; a run that stops at the listing must not
    leave the payload (megabytes) in the session."""
    made = []
    prepare_model = featurize.prepare_model

    def recording(*args):
        prepared, payload_bc = prepare_model(*args)
        made.append(payload_bc)
        return prepared, payload_bc

    monkeypatch.setattr(featurize, "prepare_model", recording)
    with pytest.raises(JobError, match="no image files found"):
        featurize.run(spark, job_args(tmp_path / "missing", tmp_path, "--weights", "random"))
    assert len(made) == 1
    assert not made[0]._jbroadcast.isValid()


def test_missing_imagenet_weights_fail_at_once_with_staging_advice(
    spark, sample_batch, tmp_path, monkeypatch
):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras"))
    advice = r"not cached.*make stage-weights FRUITS_BUCKET=.*s3://<bucket>/models/mobilenetv2/"
    with pytest.raises(JobError, match=advice):
        featurize.run(spark, job_args(sample_batch, tmp_path, "--weights", "imagenet"))
    assert not (tmp_path / "features").exists()


def test_unreadable_or_unfit_weights_are_errors(spark, sample_batch, tmp_path):
    with pytest.raises(JobError, match="--weights .*cannot read"):
        featurize.run(spark, job_args(sample_batch, tmp_path, "--weights", str(tmp_path / "x.h5")))
    junk = tmp_path / "junk.weights.h5"
    junk.write_text("not hdf5")
    with pytest.raises(JobError, match="do not fit mobilenetv2"):
        featurize.run(spark, job_args(sample_batch, tmp_path, "--weights", str(junk)))


def test_listing_spells_paths_as_spark_does_odd_names_included(spark, tmp_path):
    """The listing (one py4j call, URIs) must match binaryFile's ``path`` exactly, or an
    empty file would be missed, or a good image reported as empty."""
    good = write_batch(tmp_path / "in", per_label=1)  # labels with spaces
    odd = tmp_path / "in" / "Pêche 100%20plate" / "sub dir"
    odd.mkdir(parents=True)
    (odd / "ä b.jpg").write_bytes(good[0].read_bytes())
    (odd / "vide 0%.jpg").write_bytes(b"")
    (tmp_path / "in" / "_scratch.jpg").write_bytes(b"hidden by Spark's convention")
    listing = featurize.list_images(spark, str(tmp_path / "in"))
    read = {row.path for row in listing.images.select("path").collect()}
    empty = {p for p in listing.paths if p.endswith("vide 0%.jpg")}
    assert len(empty) == 1
    assert set(listing.paths) == read | empty
    assert any(p.endswith("/Pêche 100%20plate/sub dir/ä b.jpg") for p in read)
    assert listing.skipped == 0


def test_named_input_names_every_output_row_odd_and_empty_files_included(
    spark, tmp_path, weights_file
):
    """``--name-input-as``: the rows name the images under that URI (what the local
    backend's staged copy came from), the zero-byte file the driver rejects included;
    a path outside the input is left as it is."""
    good = write_batch(tmp_path / "in", per_label=1, labels=["Pêche 100%20plate"])
    odd = tmp_path / "in" / "Pêche 100%20plate" / "sub dir"
    odd.mkdir(parents=True)
    (odd / "ä b.jpg").write_bytes(good[0].read_bytes())
    (odd / "vide 0%.jpg").write_bytes(b"")
    named = "s3://bucket/raw/batch=2026-01-01"  # no trailing slash: one is added
    args = job_args(tmp_path / "in", tmp_path / "out", "--weights", str(weights_file),
                    "--name-input-as", named)  # fmt: skip
    featurize.run(spark, args)
    features = pd.read_parquet(tmp_path / "out" / "features")
    assert sorted(features.path) == sorted(
        f"{named}/{p.relative_to(tmp_path / 'in').as_posix()}" for p in [*good, odd / "ä b.jpg"]
    )
    rejected = pd.read_parquet(tmp_path / "out" / "rejected")
    assert rejected.path.tolist() == [f"{named}/Pêche 100%20plate/sub dir/vide 0%.jpg"]
    assert rejected.error.tolist() == ["empty file"]
    assert featurize.named_path("file:/elsewhere/x.jpg", "file:/in/", named) == (
        "file:/elsewhere/x.jpg"
    )


def test_batch_size_is_capped_in_pixels_because_it_bounds_worker_memory(capsys):
    base = ["--input", "i", "--output", "o", "--rejected", "r"]
    assert featurize.parse_args([*base, "--batch-size", "256"]).batch_size == 256  # at 224
    small = featurize.parse_args([*base, "--batch-size", "3136", "--image-size", "64"])
    assert small.batch_size == 3136
    with pytest.raises(SystemExit) as exit_:
        featurize.parse_args([*base, "--batch-size", "257"])
    assert exit_.value.code == 2
    assert "--batch-size 257 at image size 224" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        featurize.parse_args([*base, "--batch-size", "4096", "--image-size", "64"])


def test_a_packed_batch_gives_the_same_outputs_as_its_files(spark, messy_run, weights_file):
    """The same folder packed into Parquet shards (fruits.storage.packing): the same rows,
    paths spelled as binaryFile spells the files, the same features and rejections
    (zero-byte files included, which are rows there); the hidden and non-image files
    were never packed."""
    from fruits.storage import packing

    packed_root = messy_run["out"].parent / "packed-in"
    shards = packing.pack_to_folder(messy_run["root"], packed_root, limit=4096)
    assert len(shards) > 3  # several shards: every one is read
    out = messy_run["out"].parent / "packed-out"
    named = "s3://bucket/raw/batch=2026-01-01/"  # where the local backend staged it from
    summary = featurize.run(
        spark, job_args(packed_root, out, "--weights", str(weights_file), "--name-input-as", named)
    )
    assert summary.featurized == messy_run["summary"].featurized
    assert summary.rejected == messy_run["summary"].rejected
    assert summary.through_cnn == summary.featurized + summary.rejected  # the empty file too
    mine = spark.read.parquet(str(out / "features")).toPandas()
    theirs = messy_run["features"].toPandas()
    assert mine.path.str.startswith(named).all()  # read from a copy, named as in S3
    mine["rel"] = [p[len(named) :] for p in mine.path]
    theirs["rel"] = [relative(p, messy_run["root"]) for p in theirs.path]
    merged = theirs.merge(mine, on="rel", suffixes=("_files", "_packed"))
    assert len(merged) == len(theirs) == len(mine)
    assert (merged.label_files == merged.label_packed).all()
    for a, b in zip(merged.features_files, merged.features_packed, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=0)
    rejected = pd.read_parquet(out / "rejected")
    assert rejected.path.str.startswith(named).all()
    assert sorted(p[len(named) :] for p in rejected.path) == sorted(
        relative(p, messy_run["root"]) for p in messy_run["rejected"].path
    )
