"""``make stage-wheels``: the cluster nodes' wheels, downloaded once here and staged to
``s3://<bucket>/wheels/<requirements hash>/<arch>/`` for the nodes' offline install.

Run it from a machine that reaches the package index, once per bucket and again after a
pin changes (a new hash: a new folder). Per node kind (``emr``, ``ec2``) and architecture
(``x86_64``, ``arm64``) it runs::

    pip download --only-binary=:all: --python-version 3.11 --implementation cp
        --platform <each of the nodes' tags> -r <the set> -c constraints.txt

into ``dist/wheels/<hash>/<arch>/``. pyspark has only an sdist on the index: its wheel is
built once (``pip wheel --no-deps``, pure Python, one for both architectures) and found
there by the ec2 set. Then each folder is uploaded (what S3 lacks) and its manifest,
``index.json``, written last (:func:`fruits.storage.wheels.upload_wheels`). Downloads and
uploads are skipped when done. It uses your shell's AWS credentials (boto3's chain).

    python -m fruits.dev.stage_wheels [--bucket B] [--arch x86_64 arm64]
        [--sets emr ec2] [--local-only] [--endpoint-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from fruits.settings import PROJECT_ROOT, Settings, constraints_file, load_settings
from fruits.storage.wheels import (
    ARCHES,
    MANIFEST,
    PLATFORMS,
    PYTHON_VERSION,
    SETS,
    NodeWheels,
    node_wheels,
    upload_wheels,
)

CACHE = PROJECT_ROOT / "dist" / "wheels"
DONE = ".downloaded.json"  # in a local folder: the lines it was downloaded for


def download_command(
    wheels: NodeWheels, dest: Path, constraints: Path, find_links: Path | None
) -> list[str]:
    """The ``pip download`` of one set for one architecture (wheels only, the nodes'
    Python and platform tags, the project's constraints)."""
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
           "--python-version", PYTHON_VERSION, "--implementation", "cp"]  # fmt: skip
    for tag in PLATFORMS[wheels.arch]:
        cmd += ["--platform", tag]
    if find_links is not None:
        cmd += ["--find-links", str(find_links)]
    cmd += ["-c", str(constraints), "-d", str(dest), *wheels.lines]
    return cmd


def build_sdist_wheels(lines: Sequence[str], cache: Path) -> Path:
    """Wheels of the pins with no wheel on the index (pyspark), built once with ``pip
    wheel --no-deps`` into ``cache/built/``: pure Python, so one serves every arch."""
    built = cache / "built"
    built.mkdir(parents=True, exist_ok=True)
    for line in lines:
        if not line.lower().startswith("pyspark=="):
            continue
        name, version = line.split("==", 1)
        if any(built.glob(f"{name}-{version}-*.whl")):
            continue
        print(f"building the {line} wheel from its sdist (once)")
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                        "-w", str(built), line], check=True)  # fmt: skip
    return built


def download(wheels: NodeWheels, cache: Path, constraints: Path) -> Path:
    """The set's wheels for its arch in ``cache/<hash>/<arch>/``, downloaded unless done."""
    dest = cache / wheels.digest / wheels.arch
    done = dest / DONE
    if done.is_file() and json.loads(done.read_text()) == list(wheels.lines):
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    built = build_sdist_wheels(wheels.lines, cache) if wheels.kind == "ec2" else None
    print(f"downloading the {wheels.kind} nodes' wheels for {wheels.arch} into {dest}")
    subprocess.run(download_command(wheels, dest, constraints, built), check=True)
    done.write_text(json.dumps(list(wheels.lines)))
    return dest


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fruits.dev.stage_wheels", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--bucket",
        default=os.environ.get("FRUITS_BUCKET", "").strip() or Settings.bucket,
        help="the pipeline's bucket (default: FRUITS_BUCKET, else %(default)s)",
    )
    parser.add_argument("--arch", nargs="+", choices=ARCHES, default=list(ARCHES))
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--cache", type=Path, default=CACHE, help="default: %(default)s")
    parser.add_argument("--local-only", action="store_true", help="download, upload nothing")
    parser.add_argument("--endpoint-url", help="an S3 endpoint other than AWS' (moto, MinIO)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    jobs_dir = load_settings().jobs_dir
    constraints = constraints_file(jobs_dir)
    folders = []
    for kind in args.sets:
        for arch in args.arch:
            wheels = node_wheels(kind, arch, jobs_dir)
            folders.append((wheels, download(wheels, args.cache, constraints)))
    for wheels, folder in folders:
        files = [p for p in folder.iterdir() if p.suffix == ".whl"]
        size = sum(p.stat().st_size for p in files) / 1e6
        print(f"{wheels.kind} {wheels.arch}: {len(files)} wheels, {size:.0f} MB in {folder}")
    if args.local_only:
        return 0
    import boto3
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client("s3", endpoint_url=args.endpoint_url)
    try:
        for wheels, folder in folders:
            sent = upload_wheels(client, args.bucket, wheels, folder)
            print(f"{wheels.uri(args.bucket)}: {len(sent)} uploaded, {MANIFEST} written")
    except (Boto3Error, BotoCoreError, ClientError) as exc:
        print(f"cannot stage wheels to s3://{args.bucket}/: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
