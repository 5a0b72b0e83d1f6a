"""Tests of whole DAG runs, every backend: Airflow and AWS fixtures from tests/support."""

from airflow_fixtures import *  # noqa: F403
from model_fixtures import *  # noqa: F403  (the converted model, staged on moto)
from wheel_fixtures import *  # noqa: F403  (the nodes' wheels, staged on moto)
