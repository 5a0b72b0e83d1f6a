"""Tests of whole DAG runs, every backend: Airflow and AWS fixtures from tests/support."""

from airflow_fixtures import *  # noqa: F403
