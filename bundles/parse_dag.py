"""Parse the bundle's DAG as an Airflow worker without the jobs' stack would:
``python -c "$(cat parse_dag.py)" <dags> <plugins> [--run DATE CONF]``, with PYTHONPATH
the bundle's plugins and dags only. An import finder refuses TensorFlow, Keras, PySpark
and the jobs' heavy modules first, so that anything reaching for them fails here as it
would on MWAA. Prints one JSON line: import errors, tasks, plugin errors, where the
settings found the jobs, and what the refused imports raised.

Runs alone, by its source (it imports nothing of the repository): tests/dist and
``make dist-check`` both run it."""

from __future__ import annotations

import importlib.abc
import json
import sys

BLOCKED = ("tensorflow", "keras", "pyspark", "fruits_spark.inference", "fruits_spark.pca",
           "fruits_spark.io", "fruits_spark.jobs")  # fmt: skip


class Refuse(importlib.abc.MetaPathFinder):
    """Refuses the heavy modules, and records who asked."""

    asked: list[str] = []

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            self.asked.append(name)
            raise ImportError(f"{name} is refused in this bundle check")
        return None


def refused(name: str) -> str | None:
    """The error importing ``name`` raises here (None: it imported)."""
    try:
        __import__(name)
    except ImportError as exc:
        return str(exc)
    return None


def parse(dags: str, plugins: str) -> dict:
    from airflow._shared.plugins_manager.plugins_manager import (
        _load_plugins_from_plugin_directory,
    )
    from airflow.dag_processing.dagbag import DagBag

    from fruits import settings

    loaded, plugin_errors = _load_plugins_from_plugin_directory(plugins)
    bag = DagBag(dag_folder=dags)
    jobs = settings.load_settings().jobs_dir
    return {
        "import_errors": {k: str(v)[-2000:] for k, v in bag.import_errors.items()},
        "dags": {d: sorted(dag.task_dict) for d, dag in bag.dags.items()},
        "tags": {d: sorted(dag.tags) for d, dag in bag.dags.items()},
        "plugins": [type(p).__name__ for p in loaded],
        "plugin_errors": plugin_errors,
        "jobs_dir": str(jobs),
        "constraints": str(settings.constraints_file(jobs)),
        "rules": sys.modules["fruits_spark.rules"].__file__,
        "fruits": sys.modules["fruits"].__file__,
    }


def run(dags: str, date: str, conf: str) -> dict:
    """One whole run with ``dag.test()`` (tasks in this process, the import guard on)."""
    import datetime as dt

    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=dags).dags["fruits_pipeline"]
    logical = dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC)
    dag_run = dag.test(logical_date=logical, run_conf=json.loads(conf))
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    tasks = sys.modules.get("fruits.tasks")  # imported by the tasks' bodies, here
    return {"state": str(dag_run.state), "tasks": states, "code": tasks and tasks.__file__}


def main(argv: list[str]) -> None:
    sys.meta_path.insert(0, Refuse())
    dags, plugins = argv[0], argv[1]
    out = run(dags, argv[3], argv[4]) if argv[2:3] == ["--run"] else parse(dags, plugins)
    out["refused"] = {name: refused(name) for name in ("tensorflow", "pyspark")}
    out["asked"] = sorted(set(Refuse.asked) - set(out["refused"]))
    print("BUNDLE-CHECK " + json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
