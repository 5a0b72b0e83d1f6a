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
