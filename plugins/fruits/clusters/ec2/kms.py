"""The ``ec2`` backend's pre-flight look at the account's default EBS key.

The nodes' root volumes are encrypted (``Encrypted=True``, no ``KmsKeyId``): EC2 uses the
account's default EBS key. AWS's own key (``alias/aws/ebs``) needs no grant. A
customer-managed default key does: the principal that calls ``RunInstances`` (the
Airflow role) needs ``kms:CreateGrant``, ``kms:Decrypt``, ``kms:DescribeKey``,
``kms:GenerateDataKeyWithoutPlaintext`` and ``kms:ReEncrypt*`` on it, and its key
policy must let EC2 Spot's service-linked role use it for spot workers. Without them
the instances go from ``pending`` to ``terminated`` (``Client.InvalidKMSKey.InvalidState``)
and the cluster never starts (docs/security.md, "Encrypted volumes and KMS")."""

from __future__ import annotations

from typing import Any

GRANTS = (
    "kms:CreateGrant",
    "kms:Decrypt",
    "kms:DescribeKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:ReEncrypt*",
)


def customer_key_warning(key_id: str) -> str | None:
    """What to grant, if ``key_id`` (``GetEbsDefaultKmsKeyId``'s answer) is a
    customer-managed key; None for AWS's own."""
    if not key_id or key_id.endswith("alias/aws/ebs"):  # AWS's own key, by its alias
        return None
    return (
        f"the account's default EBS key is {key_id}, a customer-managed key: the role that "
        f"runs Airflow needs {', '.join(GRANTS)} on it (the stack grants them with "
        f"EbsKmsKeyArn={key_id}), and its key policy must allow the role "
        "AWSServiceRoleForEC2Spot for spot workers; without them the nodes end at launch "
        "(Client.InvalidKMSKey.InvalidState). See docs/security.md."
    )


def default_key_warning(client: Any) -> str | None:
    """:func:`customer_key_warning` for the account's default EBS key, read with
    ``ec2:GetEbsDefaultKmsKeyId``; a line saying it was not checked if that call fails
    (a role without the grant, a stand-in without the API)."""
    try:
        key_id = client.get_ebs_default_kms_key_id()["KmsKeyId"]
    except Exception as exc:
        return f"the account's default EBS key was not checked: {exc}"
    return customer_key_warning(key_id)
