"""How big a Spark executor is on a node of given vCPUs and memory, for every backend
that sizes its own (the ``ec2`` nodes, EMR's job flow). Spark's defaults are wrong for
this job: 1 GiB of heap on a 16 GiB node, and no room for the Python workers.

Standard library only: it ships to the ``ec2`` nodes beside the node program.

- The node keeps room for itself: the OS and page cache (a tenth of memory, at least
  1 GiB) and the cluster's daemon (the standalone worker or YARN's NodeManager, 1 GiB).
  EMR's nodes run more (HDFS, its agents) and an application master: its caller passes
  :func:`emr_reserved_mib`.
- Executors of at most :data:`MAX_EXECUTOR_CORES` cores, as many as fill the node's cores.
- Each executor's memory is heap (``spark.executor.memory``) plus overhead
  (``spark.executor.memoryOverhead``): JVM native memory (a tenth of the heap, at least
  384 MiB, Spark's own rule) and the Python workers -- one per core, running the CNN in
  pandas UDFs, all off-heap -- :data:`PYTHON_WORKER_MIB` each.
  ``spark.executor.pyspark.memory`` is left unset on purpose: it caps each Python
  worker's *address space* (``RLIMIT_AS``), which an inference runtime's reserved
  mappings exceed long before it uses the memory.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

MAX_EXECUTOR_CORES = 4  # Python workers per executor; larger executors gain nothing here
PYTHON_WORKER_MIB = 768  # one task's Python worker: runtime, model, a batch of images
DAEMON_MIB = 1024  # the standalone worker's JVM (or YARN's NodeManager)
MIN_HEAP_MIB = 512
MIN_OVERHEAD_MIB = 384  # Spark's own floor for spark.executor.memoryOverhead


@dataclass(frozen=True)
class ExecutorSize:
    """One node's executors: ``count`` of them, ``cores`` each, ``heap_mib`` of heap and
    ``overhead_mib`` off-heap each."""

    count: int
    cores: int
    heap_mib: int
    overhead_mib: int

    @property
    def worker_memory_mib(self) -> int:
        """What a standalone worker offers (``--memory``): it accounts only for heaps;
        the overheads stay free on the node for the executors' native and Python memory."""
        return self.count * self.heap_mib

    def spark_conf(self) -> dict[str, str]:
        """The application's settings (spark-defaults): they are the driver's to give."""
        return {
            "spark.executor.cores": str(self.cores),
            "spark.executor.memory": f"{self.heap_mib}m",
            "spark.executor.memoryOverhead": f"{self.overhead_mib}m",
        }


def default_reserved_mib(memory_mib: int) -> int:
    """What a node keeps for itself: the OS (a tenth, at least 1 GiB) and the daemon."""
    return max(1024, memory_mib // 10) + DAEMON_MIB


def emr_reserved_mib(memory_mib: int) -> int:
    """An EMR core or task node's own share: what YARN does not get (an eighth, at least
    4 GiB: HDFS, the NodeManager, EMR's agents), plus 1 GiB so the application master's
    container fits beside the executors (else one node of one executor never starts it)."""
    return yarn_reserved_mib(memory_mib) + 1024


def yarn_reserved_mib(memory_mib: int) -> int:
    """The memory an EMR node keeps out of YARN (``yarn.nodemanager.resource.memory-mb``
    is the rest)."""
    return max(4096, memory_mib // 8)


def native_mib(heap_mib: int) -> int:
    """An executor's JVM memory beside its heap: a tenth of it, at least 384 MiB."""
    return max(MIN_OVERHEAD_MIB, -(-heap_mib // 10))


def size_executors(vcpus: int, memory_mib: int, reserved_mib: int | None = None) -> ExecutorSize:
    """The executors of a node with ``vcpus`` cores and ``memory_mib`` of memory.

    ``reserved_mib`` (default :func:`default_reserved_mib`) stays free for the node. A
    node too small for the rules gets one executor with the minimum heap and overhead;
    ValueError for a node without cores or memory."""
    if vcpus < 1 or memory_mib < 1:
        raise ValueError(f"a node of {vcpus} vCPUs and {memory_mib} MiB runs no executor")
    reserved = default_reserved_mib(memory_mib) if reserved_mib is None else reserved_mib
    count = math.ceil(vcpus / MAX_EXECUTOR_CORES)
    cores = vcpus // count
    per_executor = (memory_mib - reserved) // count
    rest = per_executor - cores * PYTHON_WORKER_MIB  # for the heap and its native memory
    heap = min(rest - MIN_OVERHEAD_MIB, rest * 10 // 11)
    while heap + native_mib(heap) > rest:
        heap -= 1
    overhead = cores * PYTHON_WORKER_MIB + native_mib(heap)
    if heap < MIN_HEAP_MIB:  # a small node: split what there is, with the floors
        heap = max(MIN_HEAP_MIB, per_executor // 2)
        overhead = max(MIN_OVERHEAD_MIB, per_executor - heap)
    return ExecutorSize(count=count, cores=cores, heap_mib=heap, overhead_mib=overhead)


def for_worker(cores: int, offered_mib: int) -> ExecutorSize:
    """The executors that fill a standalone worker that offers ``cores`` and
    ``offered_mib`` (as a node sized by :func:`size_executors` offers its
    :attr:`~ExecutorSize.worker_memory_mib`): what the driver asks for. The overhead is
    the Python workers' and the JVM's share by the same rule (standalone does not count
    it against the worker)."""
    count = math.ceil(cores / MAX_EXECUTOR_CORES)
    per_core = cores // count
    heap = max(MIN_HEAP_MIB, offered_mib // count)
    overhead = per_core * PYTHON_WORKER_MIB + native_mib(heap)
    return ExecutorSize(count=count, cores=per_core, heap_mib=heap, overhead_mib=overhead)


# EC2's general-purpose (m), compute (c) and memory (r) families: memory per vCPU
_GIB_PER_VCPU = {"c": 2, "m": 4, "r": 8}
_INSTANCE = re.compile(r"([cmr])\d+[a-z]*\.(?:(\d*)xlarge|(large|medium))")


def instance_shape(instance_type: str) -> tuple[int, int] | None:
    """``(vCPUs, memory MiB)`` of a c/m/r instance type by its name (``m5.xlarge`` ->
    ``(4, 16384)``), or None for any other (metal, burstable, GPU...): no AWS call."""
    m = _INSTANCE.fullmatch(instance_type)
    if not m:
        return None
    family, times, small = m.groups()
    vcpus = {"medium": 1, "large": 2}[small] if small else 4 * int(times or 1)
    return vcpus, vcpus * _GIB_PER_VCPU[family] * 1024
