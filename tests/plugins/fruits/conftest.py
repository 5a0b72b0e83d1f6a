"""Tests of the plugins' modules, a file each; Airflow and AWS fixtures from tests/support."""

from airflow_fixtures import *  # noqa: F403
