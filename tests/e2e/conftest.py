"""Tests of whole DAG runs, every backend: Airflow and AWS fixtures from tests/support."""

from airflow_fixtures import *  # noqa: F403
from wheel_fixtures import *  # noqa: F403  (the nodes' wheels, staged on moto)
