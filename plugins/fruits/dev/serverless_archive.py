"""``make serverless-archive``: the serverless jobs' Python archive, built with Docker and
uploaded where the runs look for it (:func:`fruits.clusters.serverless.request.archive_uri`).

EMR Serverless 7 runs Python 3.9; the jobs' pins need 3.11. The archive carries its own
CPython (built in Amazon Linux 2023, ``clusters/serverless/archive/Dockerfile``) and the
jobs' requirements, installed offline from the wheels ``make stage-wheels`` downloaded
(``dist/wheels/<hash>/<arch>/``: the emr set, the same pins). Per architecture:

1. a build context: CPython's source release (``--python-source``), ``requirements.txt``
   and ``wheels/``;
2. ``docker buildx build --platform linux/<amd64|arm64> --output ...``: the archive;
3. the upload, with your shell's AWS credentials, to
   ``s3://<bucket>/wheels/<hash>/<arch>/serverless-env.tar.gz``.

Untested here: this machine has no Docker daemon (docs/backends.md, "serverless").
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from fruits.clusters.serverless.request import ARCHIVE_NAME, WHEELS_ARCH
from fruits.settings import PROJECT_ROOT, SERVERLESS_ARCHES, load_settings
from fruits.storage.wheels import NodeWheels, node_wheels

DOCKERFILE = (
    PROJECT_ROOT / "plugins" / "fruits" / "clusters" / "serverless" / "archive" / "Dockerfile"
)
PLATFORM = {"X86_64": "linux/amd64", "ARM64": "linux/arm64"}
BUILD = PROJECT_ROOT / "build" / "serverless"
PYTHON_SERIES = "3.11."  # the jobs' and the nodes' Python


def recipe_wheels(arch: str, jobs_dir: Path) -> NodeWheels:
    """The archive's requirements: the jobs' pins (the emr node set: EMR Serverless
    brings its own Spark, as EMR does), for the workers' architecture."""
    return node_wheels("emr", WHEELS_ARCH[arch], jobs_dir)


def prepare_context(arch: str, python_source: Path, wheels_dir: Path, jobs_dir: Path,
                    dest: Path) -> Path:  # fmt: skip
    """The build context the Dockerfile expects, in ``dest``; ValueError when an input is
    missing or is not what the run needs (another Python, another set's wheels)."""
    wheels = recipe_wheels(arch, jobs_dir)
    if not python_source.name.startswith(f"Python-{PYTHON_SERIES}"):
        raise ValueError(f"{python_source}: CPython {PYTHON_SERIES}x's source (Python-3.11.*.tgz)")
    found = sorted(wheels_dir.glob("*.whl"))
    if not found:
        raise ValueError(f"no wheels in {wheels_dir}: run `make stage-wheels` first")
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "wheels").mkdir(parents=True)
    shutil.copyfile(python_source, dest / "Python.tgz")
    (dest / "requirements.txt").write_text("\n".join(wheels.lines) + "\n")
    for wheel in found:
        shutil.copyfile(wheel, dest / "wheels" / wheel.name)
    shutil.copyfile(DOCKERFILE, dest / "Dockerfile")
    return dest


def docker_command(arch: str, context: Path, out: Path) -> list[str]:
    """The build of one architecture's archive into ``out`` (BuildKit's local output)."""
    return ["docker", "buildx", "build", "--platform", PLATFORM[arch],
            "--build-arg", f"PLATFORM={PLATFORM[arch]}", "--target", "export",
            "--output", f"type=local,dest={out}", str(context)]  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bucket", default=load_settings().bucket)
    parser.add_argument("--arch", nargs="+", choices=SERVERLESS_ARCHES,
                        default=list(SERVERLESS_ARCHES))  # fmt: skip
    parser.add_argument("--python-source", type=Path, required=True,
                        help="CPython's source release, Python-3.11.<n>.tgz")  # fmt: skip
    parser.add_argument("--cache", type=Path, default=PROJECT_ROOT / "dist" / "wheels")
    parser.add_argument("--local-only", action="store_true", help="build, upload nothing")
    parser.add_argument("--endpoint-url", help="an S3 endpoint other than AWS' (moto, MinIO)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    jobs_dir = load_settings().jobs_dir
    built = []
    for arch in args.arch:
        wheels = recipe_wheels(arch, jobs_dir)
        context = prepare_context(arch, args.python_source,
                                  args.cache / wheels.digest / wheels.arch, jobs_dir,
                                  BUILD / wheels.arch / "context")  # fmt: skip
        out = BUILD / wheels.arch
        subprocess.run(docker_command(arch, context, out), check=True)
        built.append((wheels, out / ARCHIVE_NAME))
        print(f"{arch}: {out / ARCHIVE_NAME}")
    if args.local_only:
        return 0
    import boto3

    client = boto3.client("s3", endpoint_url=args.endpoint_url)
    for wheels, archive in built:
        key = wheels.prefix + ARCHIVE_NAME
        client.upload_file(str(archive), args.bucket, key)
        print(f"uploaded s3://{args.bucket}/{key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
