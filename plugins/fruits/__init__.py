"""Code shared by the fruits_pipeline DAG's tasks (Airflow puts plugins/ on sys.path)."""
