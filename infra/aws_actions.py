"""The reviewed table from what the code calls to the IAM actions AWS checks for it.

moto enforces no IAM, so this table is what stands between a new call and a first
AccessDenied on a real account: :mod:`infra.code_grants` fails on any call it cannot map
here. An entry is an action, optionally ``@<resource>``:

- ``s3:GetObject``, ``s3:PutObject``, ``s3:DeleteObject``, ``s3:ListBucket``: object
  access (or a listing) under the prefixes the code uses (:data:`PREFIXES`);
- ``s3:ListBucket@bucket``, ``s3:CreateBucket@bucket``: on the bucket itself;
- ``iam:PassRole@<Resource>``: passing one role of the stack;
- anything else: the action, on whatever resource the stack scopes it to.
"""

from __future__ import annotations

from functools import cache

# S3: the provider's S3Hook methods, boto3's S3 client methods the code calls through
# hook.get_conn(), and Object.get() on what S3Hook.get_key returns.
S3_CALLS: dict[str, tuple[str, ...]] = {
    "load_file": ("s3:PutObject",),
    "load_bytes": ("s3:PutObject",),
    "load_string": ("s3:PutObject",),
    "load_file_obj": ("s3:PutObject",),
    "put_object": ("s3:PutObject",),
    "upload_file": ("s3:PutObject",),
    "read_key": ("s3:GetObject",),
    "get_key": ("s3:GetObject",),  # HeadObject now, the object's body on .get()
    "get": ("s3:GetObject",),  # S3.Object.get(), on get_key's result
    "head_object": ("s3:GetObject",),  # HeadObject is authorized as GetObject
    "check_for_key": ("s3:GetObject",),  # a 404 (not a 403) needs ListBucket: granted
    "get_object": ("s3:GetObject",),
    "download_file": ("s3:GetObject",),
    "list_keys": ("s3:ListBucket",),
    "list_prefixes": ("s3:ListBucket",),
    "iter_file_metadata": ("s3:ListBucket",),
    "get_file_metadata": ("s3:ListBucket",),
    "check_for_prefix": ("s3:ListBucket",),
    "list_objects_v2": ("s3:ListBucket",),
    "delete_objects": ("s3:DeleteObject",),
    "delete_object": ("s3:DeleteObject",),
    # a copy reads the source and writes the destination as the caller; boto3's managed
    # copy (objects over 5 GiB) does the same with UploadPartCopy, authorized as PutObject
    "copy_object": ("s3:GetObject", "s3:PutObject"),
    "copy": ("s3:GetObject", "s3:PutObject"),
    "sync_to_local_dir": ("s3:ListBucket", "s3:GetObject"),
    "check_for_bucket": ("s3:ListBucket@bucket",),  # HeadBucket
    "create_bucket": ("s3:CreateBucket@bucket",),
}

# Calls that return a client or make none: the hooks' constructors and accessors.
NO_REQUEST = frozenset({"get_conn", "client", "Object"})

# The provider's operators, sensors, hooks and constants, by the name the code imports.
# Operators list what they call themselves (waiters, on_kill) besides the main request.
PROVIDER: dict[str, tuple[str, ...]] = {
    "AwsBaseHook": (),  # a client of any service: its calls are mapped one by one
    "S3Hook": (),
    "EC2Hook": (),
    "EmrHook": (),
    "SsmHook": (),
    "EmrServerlessHook": (),
    "NO_ACL": (),
    # creates the bucket only when HeadBucket finds none; the stack creates it, so
    # s3:CreateBucket is deliberately not granted
    "S3CreateBucketOperator": ("s3:ListBucket@bucket",),
    "EmrCreateJobFlowOperator": (
        "elasticmapreduce:RunJobFlow",
        "elasticmapreduce:AddTags",  # the request's Tags
        "elasticmapreduce:DescribeCluster",  # its waiter
        "elasticmapreduce:TerminateJobFlows",  # on_kill
        "iam:PassRole@EmrServiceRole",  # ServiceRole
        "iam:PassRole@EmrInstanceRole",  # JobFlowRole (the nodes' instance profile)
    ),
    "EmrAddStepsOperator": (
        "elasticmapreduce:AddJobFlowSteps",
        "elasticmapreduce:DescribeStep",  # its waiter
    ),
    "EmrStepSensor": ("elasticmapreduce:DescribeStep",),
    "EmrTerminateJobFlowOperator": (
        "elasticmapreduce:TerminateJobFlows",
        "elasticmapreduce:DescribeCluster",  # its waiter
    ),
    "EC2CreateInstanceOperator": (
        "ec2:RunInstances",
        "ec2:CreateTags",  # TagSpecifications
        "ec2:DescribeInstances",  # the instance_running waiter
        "ec2:TerminateInstances",  # on_kill, and a launch that fails half way
        "iam:PassRole@Ec2NodeRole",  # IamInstanceProfile
        "ssm:GetParameters",  # ImageId resolve:ssm:/aws/service/ami-amazon-linux-latest/...
        "iam:CreateServiceLinkedRole",  # the account's first spot request
    ),
    "EC2TerminateInstanceOperator": (
        "ec2:TerminateInstances",
        "ec2:DescribeInstances",  # the instance_terminated waiter
    ),
    "EmrServerlessCreateApplicationOperator": (
        "emr-serverless:CreateApplication",
        "emr-serverless:TagResource",  # the request's tags
        "emr-serverless:GetApplication",  # its created and started waiters
        "emr-serverless:StartApplication",
    ),
    "EmrServerlessStartJobOperator": (
        "emr-serverless:StartJobRun",
        "emr-serverless:TagResource",  # the job's tags
        "emr-serverless:GetApplication",  # starts a stopped application first
        "emr-serverless:StartApplication",
        "emr-serverless:CancelJobRun",  # on_kill
        "emr-serverless:GetJobRun",  # on_kill's wait
        "iam:PassRole@ServerlessJobRole",  # executionRoleArn
    ),
    "EmrServerlessJobSensor": ("emr-serverless:GetJobRun",),
    "EmrServerlessDeleteApplicationOperator": (
        "emr-serverless:ListJobRuns",  # force_stop: cancel_running_jobs
        "emr-serverless:CancelJobRun",
        "emr-serverless:StopApplication",
        "emr-serverless:GetApplication",  # the stopped and terminated waiters
        "emr-serverless:DeleteApplication",
    ),
    "SsmRunCommandOperator": (
        "ssm:SendCommand",
        "ssm:GetCommandInvocation",  # the command_executed waiter
    ),
}

# Spark and Hadoop I/O in the jobs, through s3a (ec2) or EMRFS (EMR): reads list and get;
# writes (mode "overwrite", the committers' _temporary/) put, list, get and delete.
SPARK_IO: dict[str, tuple[str, ...]] = {
    "read": ("s3:GetObject", "s3:ListBucket"),
    "write": ("s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:ListBucket"),
    "exists": ("s3:GetObject", "s3:ListBucket"),  # getFileStatus: HEAD, then a LIST
    "isFile": ("s3:GetObject", "s3:ListBucket"),
    "open": ("s3:GetObject",),
    "create": ("s3:PutObject", "s3:GetObject", "s3:ListBucket"),
    "delete": ("s3:DeleteObject", "s3:ListBucket"),
    "rename": ("s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"),
    "makeQualified": (),  # names a path: no request
    "getContentSummary": ("s3:GetObject", "s3:ListBucket"),  # a listing (HEAD on a file)
}

# `aws s3 <command>` in the nodes' shell scripts: (reading from S3, writing to S3).
AWS_S3_CLI: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "cp": (("s3:GetObject",), ("s3:PutObject",)),
    "sync": (("s3:GetObject", "s3:ListBucket"), ("s3:PutObject", "s3:ListBucket")),
    "ls": (("s3:ListBucket",), ()),
    "rm": (("s3:DeleteObject",), ()),
}

# Services whose client calls map one to one to actions (the API's operation name);
# S3's do not (HeadObject is GetObject, ListObjectsV2 ListBucket...): they need S3_CALLS.
SERVICES = {
    "ec2": "ec2",
    "emr": "elasticmapreduce",
    "ssm": "ssm",
    "iam": "iam",
    "sts": "sts",
    "emr-serverless": "emr-serverless",
    "ecr": "ecr",
}

# S3 access a prefix grants, by letter: read, write, delete, list (s3:prefix condition).
MODES = {"r": "s3:GetObject", "w": "s3:PutObject", "d": "s3:DeleteObject", "l": "s3:ListBucket"}

# Every top-level prefix the code reads or writes, and what each role does there. Rows
# are reviewed by hand; a prefix found in the code without a row fails the check, and a
# role's letters must be granted by that role's policies in the stack.
# SOURCE stands for FRUITS_INCOMING=s3://<source bucket>/<prefix> (stack: SourceBucket,
# SourcePrefix): listed, and read by the server-side copies into raw/.
SOURCE = "<source>/"
PREFIXES: dict[str, dict[str, str]] = {
    "raw/": {"airflow": "rwdl", "emr-node": "rl", "ec2-node": "rl", "serverless-job": "rl"},
    "code/": {"airflow": "rwl", "emr-node": "rl", "ec2-node": "rl", "serverless-job": "rl"},
    "models/": {"airflow": "rl", "emr-node": "rl", "ec2-node": "rl", "serverless-job": "rl"},
    # the nodes' staged wheels: the pre-flight reads index.json, the nodes copy the folder;
    # written only by the operator's make stage-wheels (OPERATOR_ONLY); the serverless
    # jobs read their Python archive beside them (spark.archives)
    "wheels/": {"airflow": "r", "emr-node": "rl", "ec2-node": "rl", "serverless-job": "r"},
    # FRUITS_EC2_JARS_URI: hadoop-aws and the SDK bundle, mirrored once by an operator
    "jars/": {"airflow": "", "emr-node": "", "ec2-node": "rl"},
    "runs/": {"airflow": "rwdl", "emr-node": "rwdl", "ec2-node": "rwdl", "serverless-job": "rwdl"},
    "runs/_staging/": {
        "airflow": "rwdl",
        "emr-node": "rwdl",
        "ec2-node": "rwdl",
        "serverless-job": "rwdl",
    },  # fmt: skip
    "logs/emr/": {"airflow": "rl", "emr-node": "w", "ec2-node": ""},
    "logs/ec2/": {"airflow": "rwl", "emr-node": "", "ec2-node": "rwdl"},
    # EMR Serverless writes the jobs' logs as the job role; Airflow reads a driver's stderr
    "logs/serverless/": {"airflow": "rl", "serverless-job": "w"},
    SOURCE: {"airflow": "rl", "emr-node": "", "ec2-node": ""},
}


@cache
def _operations() -> dict[str, list[str]]:
    """boto3 method name -> every ``service:Operation`` it names, in SERVICES and S3."""
    import botocore.session
    from botocore import xform_name

    session = botocore.session.get_session()
    found: dict[str, list[str]] = {}
    for service in [*SERVICES, "s3"]:
        for op in session.get_service_model(service).operation_names:
            found.setdefault(xform_name(op), []).append(f"{service}:{op}")
    return found


def client_call(method: str) -> tuple[str, ...] | None:
    """The actions of ``<client or hook>.method(...)``, or None when it cannot be mapped:
    unknown, S3 without an entry in S3_CALLS, or named alike in two services."""
    if method in S3_CALLS:
        return S3_CALLS[method]
    if method in NO_REQUEST:
        return ()
    ops = _operations().get(method, [])
    if len(ops) != 1 or ops[0].startswith("s3:"):
        return None
    service, op = ops[0].split(":")
    return (f"{SERVICES[service]}:{op}",)
