"""File I/O through Hadoop's FileSystem, so one code path serves local paths, file:// and s3://.

On EMR, ``s3://`` is EMRFS; locally it is the plain file system. The driver reads
weights and writes reports with these helpers; executors never call them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import SparkSession


@dataclass(frozen=True)
class ListedFile:
    path: str  # the URI as Spark's binaryFile source reports it
    length: int


def _fs_and_path(spark: SparkSession, uri: str):
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    return fs, path


def qualify(spark: SparkSession, uri: str) -> str:
    """The fully qualified URI Spark uses for ``uri`` (``/a/b`` -> ``file:/a/b``)."""
    fs, path = _fs_and_path(spark, uri)
    return fs.makeQualified(path).toString()


def exists(spark: SparkSession, uri: str) -> bool:
    fs, path = _fs_and_path(spark, uri)
    return bool(fs.exists(path))


def list_files(spark: SparkSession, uri: str) -> list[ListedFile]:
    """Every file under ``uri``, recursively, hidden ones included (callers filter)."""
    fs, path = _fs_and_path(spark, uri)
    if not fs.exists(path):
        return []
    files = []
    it = fs.listFiles(path, True)
    while it.hasNext():
        status = it.next()
        files.append(ListedFile(status.getPath().toString(), int(status.getLen())))
    return files


def read_bytes(spark: SparkSession, uri: str) -> bytes:
    fs, path = _fs_and_path(spark, uri)
    if not fs.exists(path) or not fs.isFile(path):
        raise FileNotFoundError(f"no such file: {uri}")
    stream = fs.open(path)
    try:
        jvm = spark.sparkContext._jvm
        return bytes(jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
    finally:
        stream.close()


def write_bytes(spark: SparkSession, uri: str, data: bytes) -> None:
    fs, path = _fs_and_path(spark, uri)
    stream = fs.create(path, True)
    try:
        stream.write(bytearray(data))
    finally:
        stream.close()


def delete(spark: SparkSession, uri: str) -> None:
    fs, path = _fs_and_path(spark, uri)
    fs.delete(path, True)
