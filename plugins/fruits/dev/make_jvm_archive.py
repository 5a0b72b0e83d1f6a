"""``make jvm-archive``: make this install's Spark class archive if it is missing, mark it
used, and remove the default folder's archives not used lately
(:mod:`fruits.clusters.local.jvm_archive`).

    python -m fruits.dev.make_jvm_archive
"""

from __future__ import annotations

import os
import sys

from fruits.clusters.local import jvm_archive
from fruits.clusters.local.sparkenv import spark_env


def main() -> int:
    path = jvm_archive.archive_path()
    if path is None:
        print("JVM archive: disabled or no Java/Spark here; nothing to do")
        return 0
    if path.is_file():
        os.utime(path)  # used now: prune keeps the archives used last
        print(f"JVM archive: {path} (already made)")
    else:
        env = spark_env({jvm_archive.ARCHIVE_ENV: "off"})
        jvm_archive.build(path, env)
        print(f"JVM archive: made {path} ({path.stat().st_size / 2**20:.0f} MiB)")
    if not os.environ.get(jvm_archive.ARCHIVE_ENV, "").strip():  # the default folder, ours to tidy
        for old in jvm_archive.prune(path.parent, path):
            print(f"JVM archive: removed {old} (another install's, not used lately)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
