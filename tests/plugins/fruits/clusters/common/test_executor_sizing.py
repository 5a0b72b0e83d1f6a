"""Executors sized from the node: worked examples by hand, and the rules every size keeps."""

from __future__ import annotations

import pytest

from fruits.clusters.common import executor_sizing as sizing


def test_a_16_gib_4_vcpu_node_gets_one_big_executor_not_spark_s_1_gib():
    # reserved: max(1 GiB, 1638) + 1 GiB daemon = 2662 -> 13722 for the executor;
    # Python workers 4 x 768 = 3072; heap + heap/10 in the remaining 10650
    size = sizing.size_executors(4, 16384)
    assert size == sizing.ExecutorSize(count=1, cores=4, heap_mib=9681, overhead_mib=4041)
    assert size.spark_conf() == {
        "spark.executor.cores": "4",
        "spark.executor.memory": "9681m",
        "spark.executor.memoryOverhead": "4041m",
    }
    assert size.worker_memory_mib == 9681  # standalone counts heaps only


def test_a_big_node_gets_several_executors_of_four_cores():
    size = sizing.size_executors(16, 65536)
    assert (size.count, size.cores) == (4, 4)
    # 65536 - (6553 + 1024) = 57959 -> 14489 each; 3072 Python; 11417 = heap 10379 + 1038
    assert (size.heap_mib, size.overhead_mib) == (10379, 3072 + 1038)
    assert size.worker_memory_mib == 4 * 10379


@pytest.mark.parametrize(
    ("vcpus", "memory"), [(2, 8192), (4, 16384), (6, 24576), (8, 32768), (16, 65536), (64, 262144)]
)
def test_every_size_fits_the_node_and_leaves_the_python_workers_their_share(vcpus, memory):
    size = sizing.size_executors(vcpus, memory)
    assert size.count * size.cores == vcpus  # every core runs a task
    assert size.cores <= sizing.MAX_EXECUTOR_CORES
    used = size.count * (size.heap_mib + size.overhead_mib)
    assert used <= memory - sizing.default_reserved_mib(memory)
    assert memory - sizing.default_reserved_mib(memory) - used < size.count  # nothing wasted
    assert size.overhead_mib >= size.cores * sizing.PYTHON_WORKER_MIB + 384
    assert size.overhead_mib - size.cores * sizing.PYTHON_WORKER_MIB >= size.heap_mib // 10
    # the primary, from what the worker offers, asks for exactly these executors
    assert sizing.for_worker(vcpus, size.worker_memory_mib) == size


def test_a_small_node_still_gets_the_minimums():
    size = sizing.size_executors(1, 2048)
    assert (size.count, size.cores, size.heap_mib, size.overhead_mib) == (1, 1, 512, 384)
    with pytest.raises(ValueError, match="0 vCPUs"):
        sizing.size_executors(0, 2048)


def test_emr_keeps_room_for_yarn_s_neighbours_and_the_application_master():
    # m5.xlarge: YARN gets 16384 - 4096 = 12288 (EMR's own figure for it); the
    # executor leaves 1 GiB of that for the application master's container
    assert sizing.yarn_reserved_mib(16384) == 4096
    size = sizing.size_executors(4, 16384, sizing.emr_reserved_mib(16384))
    assert size.heap_mib + size.overhead_mib <= 12288 - 1024
    assert size.heap_mib + size.overhead_mib > 12288 - 1024 - 2


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("m5.xlarge", (4, 16384)),
        ("m7g.2xlarge", (8, 32768)),
        ("m6i.large", (2, 8192)),
        ("c6gn.4xlarge", (16, 32768)),
        ("r5.12xlarge", (48, 393216)),
        ("m6g.medium", (1, 4096)),
        ("t3.large", None),
        ("m5.metal", None),
        ("p3.2xlarge", None),
    ],
)
def test_instance_shapes_by_name(name, shape):
    assert sizing.instance_shape(name) == shape
