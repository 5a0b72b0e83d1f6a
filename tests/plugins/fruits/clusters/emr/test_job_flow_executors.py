"""The EMR job flow sizes its executors by the backends' one rule (executor_sizing)."""

from __future__ import annotations

import pytest
from dag_support import BUCKET, CODE

from fruits.clusters.common import executor_sizing
from fruits.clusters.emr.job_flow import job_flow
from fruits.settings import load_settings


def classification(request: dict, name: str) -> dict[str, str]:
    found = [c for c in request["Configurations"] if c["Classification"] == name]
    assert len(found) == 1, request["Configurations"]
    return found[0].get("Properties", {})


def test_executors_on_m5_xlarge_core_nodes_fill_yarn_and_leave_the_python_workers_room():
    request = job_flow(load_settings({"FRUITS_BUCKET": BUCKET}), name="n", code=CODE)
    defaults = classification(request, "spark-defaults")
    # m5.xlarge: 4 vCPUs, 16 GiB; YARN gets 12 GiB, 1 GiB of it kept for the AM:
    # 11264 = 3072 (4 Python workers) + heap 7447 + native 745 (+ 0 left)
    assert defaults["spark.executor.cores"] == "4"
    assert defaults["spark.executor.memory"] == "7447m"
    assert defaults["spark.executor.memoryOverhead"] == "3817m"
    assert defaults["spark.pyspark.python"] == "/usr/bin/python3.11"  # the template's stay
    assert classification(request, "yarn-site") == {
        "yarn.nodemanager.resource.memory-mb": "12288",
        "yarn.scheduler.maximum-allocation-mb": "12288",
    }


@pytest.mark.parametrize(
    ("env", "shape"),
    [
        ({"FRUITS_EMR_CORE_TYPE": "m5.4xlarge"}, (16, 65536)),
        (  # spot task nodes smaller than the core nodes: the smaller one decides
            {
                "FRUITS_EMR_CORE_TYPE": "m5.2xlarge",
                "FRUITS_EMR_TASK_TYPE": "c5.2xlarge",
                "FRUITS_EMR_TASK_SPOT_COUNT": "2",
            },
            (8, 16384),
        ),  # fmt: skip
    ],
)
def test_the_size_follows_the_smallest_executor_node(env, shape):
    request = job_flow(load_settings({"FRUITS_BUCKET": BUCKET, **env}), name="n", code=CODE)
    vcpus, memory = shape
    size = executor_sizing.size_executors(vcpus, memory, executor_sizing.emr_reserved_mib(memory))
    defaults = classification(request, "spark-defaults")
    assert {k: defaults[k] for k in size.spark_conf()} == size.spark_conf()
    yarn = classification(request, "yarn-site")["yarn.nodemanager.resource.memory-mb"]
    assert int(yarn) >= size.count * (size.heap_mib + size.overhead_mib) + 1024  # + the AM


def test_an_instance_type_of_unknown_shape_leaves_the_size_to_emr():
    settings = load_settings({"FRUITS_BUCKET": BUCKET, "FRUITS_EMR_CORE_TYPE": "m5.metal"})
    request = job_flow(settings, name="n", code=CODE)
    assert classification(request, "spark") == {"maximizeResourceAllocation": "true"}
    assert "spark.executor.memory" not in classification(request, "spark-defaults")
    assert not [c for c in request["Configurations"] if c["Classification"] == "yarn-site"]
