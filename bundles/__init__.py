"""``make dist``: the DAG, the ``fruits`` plugins and the Spark jobs laid out for the
platforms that provide Airflow themselves (MWAA, the official image); docs/bundles.md."""
