"""Tests of the DAG file itself: Airflow and AWS fixtures from tests/support."""

from airflow_fixtures import *  # noqa: F403
