"""File I/O through Hadoop's FileSystem, so one code path serves local paths, file:// and s3://.

On EMR, ``s3://`` is EMRFS; locally it is the plain file system. The driver reads
weights and writes reports with these helpers; executors never call them.
"""

from __future__ import annotations

from urllib.parse import unquote

from pyspark.sql import DataFrame, SparkSession


def _fs_and_path(spark: SparkSession, uri: str):
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    return fs, path


def exists(spark: SparkSession, uri: str) -> bool:
    fs, path = _fs_and_path(spark, uri)
    return bool(fs.exists(path))


def qualified(spark: SparkSession, uri: str) -> str:
    """The URI as Spark names the files under it: ``/a/b`` -> ``file:/a/b``; an ``s3://``
    URI as it is (no trailing slash)."""
    fs, path = _fs_and_path(spark, uri)
    return str(fs.makeQualified(path).toString())


def total_bytes(spark: SparkSession, uri: str) -> int:
    """The size of every file under ``uri`` (one call: a listing on S3)."""
    fs, path = _fs_and_path(spark, uri)
    return int(fs.getContentSummary(path).getLength())


def input_files(df: DataFrame) -> list[str]:
    """The files a file-source DataFrame reads (Spark's file index, hidden files left out),
    as URIs (``file:///a/b%20c``). One py4j call, not one per file."""
    files = df._jdf.inputFiles()
    if len(files) == 0:
        return []
    jvm = df.sparkSession.sparkContext._jvm
    return str(jvm.org.apache.hadoop.util.StringUtils.join("\n", files)).split("\n")


def count_input_files(df: DataFrame) -> int:
    return len(df._jdf.inputFiles())


def as_spark_path(uri: str) -> str:
    """A file index URI spelled as the ``path`` column of a file source: Hadoop's
    ``Path.toString()``, not percent-encoded (``file:///a/b%20c`` -> ``file:/a/b c``).
    Characters a URI cannot hold (a newline) stay encoded in the URI, so splitting a
    joined listing on newlines is safe."""
    path = unquote(uri)
    return "file:/" + path[len("file:///") :] if path.startswith("file:///") else path


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
