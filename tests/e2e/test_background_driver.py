"""The e2e tests' drivers (moto's stand-in for EMR steps and EC2 nodes) ride out a
moment of failure on a busy host, and still fail the test on one that lasts."""

from __future__ import annotations

from dag_support import BackgroundDriver


class Flaky(BackgroundDriver):
    PATIENCE = 3

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        if self.steps <= self.failures:
            raise ConnectionError(f"moto slow ({self.steps})")
        if self.steps == self.failures + 2:
            self.stop.set()


def run(driver: BackgroundDriver) -> BackgroundDriver:
    driver.thread.start()
    driver.thread.join(timeout=30)
    assert not driver.thread.is_alive()
    return driver


def test_a_passing_failure_is_retried_and_the_driver_goes_on():
    driver = run(Flaky(failures=2))
    assert driver.errors == [] and len(driver.retried) == 2
    assert driver.steps == 4  # two failures, then two steps that worked


def test_a_lasting_failure_ends_the_driver_with_its_error():
    driver = run(Flaky(failures=10**6))
    assert driver.steps == Flaky.PATIENCE
    assert [str(e) for e in driver.errors] == [f"moto slow ({Flaky.PATIENCE})"]


class Closing(Flaky):
    def __init__(self, failures: int) -> None:
        super().__init__(failures)
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_a_driver_ends_what_it_started_however_it_stops():
    """close() (a running spark-submit ended, its scratch removed) when the test stops
    the driver and when a lasting failure ends it."""
    for failures in (0, 10**6):
        assert run(Closing(failures)).closed == 1


def test_the_ec2_nodes_steps_map_back_to_the_uris_the_backend_submitted():
    """The ec2 driver runs ``steps.json``'s node argv here: read back as EMR's step, it
    is the step the backend built (only the deploy mode is the node's client)."""
    from dag_support import BUCKET, CODE, node_step

    from fruits.clusters.common.spark_steps import build_steps, for_standalone

    run = {"model": "mobilenetv2", "image_size": 64, "variance": 0.95,
           "model_file": f"s3://{BUCKET}/models/m.tflite"}  # fmt: skip
    steps = build_steps(bucket=BUCKET, batch="2026-11-24", run_key="k", code=CODE, run=run)
    code_prefix = CODE["featurize"].removesuffix("featurize.py")
    argvs = for_standalone(steps, master_url="spark://10.0.0.5:7077",
                           spark_submit="/opt/fruits/venv/bin/spark-submit",
                           code_prefix=code_prefix, code_dir="/opt/fruits/code")  # fmt: skip
    for step, argv in zip(steps, argvs, strict=True):
        back = node_step({"name": step["Name"], "argv": argv}, code_prefix)
        submitted = step["HadoopJarStep"]["Args"]
        assert back["Name"] == step["Name"]
        assert back["HadoopJarStep"]["Args"] == [
            "client" if a == "cluster" else a for a in submitted
        ]
