#!/usr/bin/env bash
# fruits-pipeline's settings for an Amazon MWAA environment: MWAA sources this startup
# script on every component before Airflow starts, and Airflow's processes inherit what it
# exports. Replace the my-* placeholders (infra/fruits-pipeline.yaml's outputs name them);
# every setting: docs/configuration.md. A value already set in the environment wins.

# The cluster backend: emr or ec2 (local needs Spark on the worker: not on MWAA).
export FRUITS_COMPUTE="${FRUITS_COMPUTE:-emr}"
# The pipeline's bucket (the stack's BucketName output), not the environment's own.
export FRUITS_BUCKET="${FRUITS_BUCKET:-my-fruits}"
# Where batches wait, <prefix>/<YYYY-MM-DD>/<label>/<file>: MWAA's workers share no disk.
export FRUITS_INCOMING="${FRUITS_INCOMING:-s3://my-fruits-landing/incoming}"
# The form's default weights: imagenet reads s3://<FRUITS_BUCKET>/models/<model>/, which
# `make stage-weights` fills once from a machine with the project (not from MWAA).
export FRUITS_WEIGHTS="${FRUITS_WEIGHTS:-imagenet}"
# MWAA's aws_default connection uses the environment's execution role.
export FRUITS_AWS_CONN_ID="${FRUITS_AWS_CONN_ID:-aws_default}"
# Sensors look every minute and free their worker slot in between.
export FRUITS_POKE_INTERVAL="${FRUITS_POKE_INTERVAL:-60}"

# emr: a private subnet with a NAT (the bootstrap installs the job requirements with pip).
export FRUITS_EMR_SUBNET="${FRUITS_EMR_SUBNET:-}"
# ec2: both required (the stack's ClusterSecurityGroup output and a subnet of its VpcId).
export FRUITS_EC2_SUBNET="${FRUITS_EC2_SUBNET:-}"
export FRUITS_EC2_SECURITY_GROUP="${FRUITS_EC2_SECURITY_GROUP:-}"
