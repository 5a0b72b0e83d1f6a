"""Each rule the layers share has one home (``fruits_spark.rules``, the model registry):
the trigger form, the settings, ``validate_params`` and the jobs' arguments accept and
refuse exactly the same values."""

from __future__ import annotations

import pytest

from fruits.params import ParamError, trigger_form, validate
from fruits.settings import ConfigError, load_settings, model_names, runtime_names
from fruits_spark import rules
from fruits_spark.inference.models import MODELS as REGISTRY

SIZE_LOW, SIZE_HIGH = rules.IMAGE_SIZE_RANGE
FEATURIZE_BASE = ["--input", "in", "--output", "out", "--rejected", "rej", "--batch-size", "1"]


def _accepts_setting(name: str, value: object) -> bool:
    try:
        load_settings({name: str(value)})
    except ConfigError:
        return False
    return True


def _accepts_param(name: str, value: object, tmp_path) -> bool:
    (tmp_path / "2026-11-24").mkdir(exist_ok=True)
    settings = load_settings({"FRUITS_INCOMING": str(tmp_path)})
    try:
        validate({name: value, "batch_date": "2026-11-24"}, logical_date=None, settings=settings)
    except ParamError:
        return False
    return True


def _accepts_featurize(size: int) -> bool:
    import featurize

    try:
        featurize.parse_args([*FEATURIZE_BASE, "--image-size", str(size)])
    except SystemExit:
        return False
    return True


def _accepts_reduce(variance: float) -> bool:
    import reduce

    from fruits_spark.jobs import JobError

    try:
        reduce.parse_args(
            ["--input", "i", "--output", "o", "--report", "r", "--variance", str(variance)]
        )
    except JobError:
        return False
    return True


@pytest.mark.parametrize(
    "size, ok",
    [(SIZE_LOW - 1, False), (SIZE_LOW, True), (SIZE_HIGH, True), (SIZE_HIGH + 1, False)],
)
def test_every_layer_bounds_the_image_size_alike(size, ok, tmp_path):
    form = trigger_form(load_settings({}))["image_size"].schema
    assert (form["minimum"] <= size <= form["maximum"]) is ok
    assert _accepts_setting("FRUITS_IMAGE_SIZE", size) is ok
    assert _accepts_param("image_size", size, tmp_path) is ok
    assert _accepts_featurize(size) is ok


@pytest.mark.parametrize("variance, ok", [(0.0, False), (1e-6, True), (1.0, True), (1.01, False)])
def test_every_layer_bounds_the_variance_alike(variance, ok, tmp_path):
    form = trigger_form(load_settings({}))["variance"].schema
    assert (form["exclusiveMinimum"] < variance <= form["maximum"]) is ok
    assert _accepts_setting("FRUITS_VARIANCE", variance) is ok
    assert _accepts_param("variance", variance, tmp_path) is ok
    assert _accepts_reduce(variance) is ok
    from fruits_spark.jobs import JobError
    from fruits_spark.pca.linalg import choose_k

    if ok:
        assert choose_k([0.5, 0.5], variance=variance) in (1, 2)
    else:
        with pytest.raises(JobError, match="--variance"):
            choose_k([0.5, 0.5], variance=variance)


def test_the_defaults_are_the_jobs_defaults():
    import featurize
    import reduce

    settings = load_settings({})
    args = featurize.parse_args(FEATURIZE_BASE[:-2])
    assert settings.image_size == args.image_size == rules.IMAGE_SIZE_DEFAULT
    assert args.batch_size == rules.BATCH_SIZE_DEFAULT
    assert settings.variance == rules.VARIANCE_DEFAULT
    assert reduce.parse_args(["--input", "i", "--output", "o", "--report", "r"]).variance == (
        rules.VARIANCE_DEFAULT
    )


def test_the_form_the_settings_and_the_jobs_know_the_same_models(tmp_path):
    """One model registry (fruits_spark.inference.models.MODELS)."""
    import featurize

    assert model_names() == tuple(REGISTRY)
    form = trigger_form(load_settings({}))
    assert form["model"].schema["enum"] == list(REGISTRY)
    for name in REGISTRY:
        assert load_settings({"FRUITS_MODEL": name}).model == name
        assert _accepts_param("model", name, tmp_path)
        assert featurize.parse_args([*FEATURIZE_BASE, "--model", name]).model == name
    assert not _accepts_setting("FRUITS_MODEL", "resnet50")
    assert not _accepts_param("model", "resnet50", tmp_path)


def test_the_form_the_settings_and_the_jobs_know_the_same_runtimes(tmp_path):
    """One list of runtimes (fruits_spark.inference.runtimes.RUNTIMES), its default the jobs'."""
    import featurize

    from fruits_spark.inference import runtimes

    assert runtime_names() == runtimes.RUNTIMES
    assert runtime_names()[0] == runtimes.DEFAULT_RUNTIME
    assert load_settings({}).runtime == runtimes.DEFAULT_RUNTIME
    model = featurize.parse_args(FEATURIZE_BASE).model
    assert featurize.parse_args(FEATURIZE_BASE).runtime == runtimes.resolve(
        runtimes.DEFAULT_RUNTIME, model
    )
    form = trigger_form(load_settings({}))
    assert form["runtime"].schema["enum"] == list(runtimes.RUNTIMES)
    for name in runtimes.RUNTIMES:
        assert load_settings({"FRUITS_RUNTIME": name}).runtime == name
        assert _accepts_param("runtime", name, tmp_path)
        chosen = featurize.parse_args([*FEATURIZE_BASE, "--runtime", name]).runtime
        assert chosen == runtimes.resolve(name, model) and chosen != runtimes.AUTO
    assert not _accepts_setting("FRUITS_RUNTIME", "onnx")
    assert not _accepts_param("runtime", "onnx", tmp_path)


def test_auto_runs_each_model_on_its_faster_runtime():
    """``auto`` (the default) resolves in the job, by model; explicit choices are kept."""
    import featurize

    from fruits_spark.inference import models, runtimes

    assert set(runtimes.FASTEST) <= set(models.MODELS)  # no misspelt model
    assert runtimes.resolve("auto", "vgg16") == "keras"
    assert runtimes.resolve("auto", "mobilenetv2") == "litert"
    assert runtimes.resolve("auto", "mobilenet") == "litert"
    assert runtimes.resolve("litert", "vgg16") == "litert"  # asked for, not overridden
    with pytest.raises(ValueError, match="unknown runtime"):
        runtimes.resolve("onnx", "vgg16")
    vgg = featurize.parse_args([*FEATURIZE_BASE, "--model", "vgg16"])
    assert vgg.runtime == "keras"


def test_the_plugins_read_the_registry_without_numpy_or_tensorflow():
    """The DAG file is parsed often: reading the model list must stay cheap."""
    import subprocess
    import sys

    code = (
        "import sys; from fruits.settings import model_names; model_names(); "
        "print(sorted(m for m in ('numpy', 'tensorflow', 'keras') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_batch_size_bounds_name_the_memory_reason():
    assert rules.batch_size_error(rules.BATCH_SIZE_DEFAULT, rules.IMAGE_SIZE_DEFAULT) is None
    assert "between 1 and 4096" in rules.batch_size_error(0, 224)
    assert "memory" in rules.batch_size_error(4096, 64)


HEAVY = ("numpy", "PIL", "pandas", "pyarrow", "tensorflow", "keras", "pyspark", "ai_edge_litert")


def test_parsing_the_dag_loads_the_rules_and_nothing_heavy():
    """The DAG reads the shared rules when it is parsed, on Airflow workers that may have
    none of the jobs' libraries: fruits_spark.rules and what the plugins import at parse
    time load no numpy, Pillow, pandas, Arrow, TensorFlow, Keras, pyspark or LiteRT."""
    import subprocess
    import sys

    from dag_support import ROOT

    probe = (
        "import sys\n"
        "import fruits_pipeline\n"
        "assert 'fruits_spark.rules' in sys.modules\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    paths = [ROOT / "dags", ROOT / "plugins", ROOT / "spark_jobs"]
    env = {"PYTHONPATH": ":".join(map(str, paths)), "PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=env, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_every_layer_knows_the_same_precisions_and_refuses_int8_alike(tmp_path, capsys):
    """One list of precisions (fp32 first: the default everywhere) and one rule for int8:
    a measured model (mobilenet) on LiteRT. A bad value fails fast, naming why."""
    import featurize

    from fruits.settings import precision_names

    assert precision_names() == rules.PRECISIONS and rules.PRECISIONS[0] == rules.FP32
    assert load_settings({}).precision == rules.DEFAULT_PRECISION == "fp32"
    assert featurize.parse_args(FEATURIZE_BASE).precision == "fp32"
    assert trigger_form(load_settings({}))["precision"].schema["enum"] == list(rules.PRECISIONS)
    mobilenet = ["--model", "mobilenet", "--precision", "int8"]
    assert featurize.parse_args([*FEATURIZE_BASE, *mobilenet]).runtime == "litert"  # from auto
    for bad, why in [
        (["--model", "vgg16", "--precision", "int8"], "int8 is measured for mobilenet only"),
        ([*mobilenet, "--runtime", "keras"], "use runtime auto or litert, not keras"),
        (["--precision", "fp16"], "invalid choice: 'fp16'"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            featurize.parse_args([*FEATURIZE_BASE, *bad])
        assert exit_.value.code == 2 and why in capsys.readouterr().err
    assert not _accepts_setting("FRUITS_PRECISION", "fp16")
    assert not _accepts_setting("FRUITS_PRECISION", "int8")  # with the default mobilenetv2
    assert not _accepts_param("precision", "bf16", tmp_path)


def test_a_converted_models_key_hashes_its_precision_and_calibration_set():
    args = ("mobilenet", 224, "d914", "keras==3.15.1 tensorflow-cpu==2.21.0")
    fp32 = rules.converted_key(*args)
    # fp32 keys are the ones made before precisions existed (computed with the rules of
    # 9f878d4): files already staged stay valid
    assert fp32 == "mobilenet-224-dfc8d7c2d15bead31b298b55"
    int8 = rules.converted_key(*args, precision="int8")
    assert int8.startswith("mobilenet-224-int8-") and int8 != fp32
    assert rules.converted_key(*args, precision="int8", calibration="another-set") != int8
    assert rules.converted_key(*args, calibration="another-set") == fp32  # fp32 calibrates nothing
