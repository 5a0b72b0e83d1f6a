"""The pre-flight look at the account's default EBS key: a customer-managed key needs
KMS grants that AWS's own key does not."""

from __future__ import annotations

from fruits.clusters.ec2.kms import GRANTS, customer_key_warning, default_key_warning

CMK = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


class Ec2:
    def __init__(self, answer):
        self.answer = answer

    def get_ebs_default_kms_key_id(self):
        if isinstance(self.answer, Exception):
            raise self.answer
        return {"KmsKeyId": self.answer}


def test_aws_own_ebs_key_needs_no_grant():
    assert customer_key_warning("alias/aws/ebs") is None
    assert default_key_warning(Ec2("alias/aws/ebs")) is None


def test_a_customer_managed_default_key_names_the_grants_and_the_stack_parameter():
    warning = default_key_warning(Ec2(CMK))
    assert CMK in warning
    for grant in GRANTS:
        assert grant in warning
    assert f"EbsKmsKeyArn={CMK}" in warning
    assert "AWSServiceRoleForEC2Spot" in warning


def test_a_failed_look_says_it_did_not_check():
    from botocore.exceptions import ClientError

    denied = ClientError({"Error": {"Code": "UnauthorizedOperation", "Message": "no"}},
                         "GetEbsDefaultKmsKeyId")  # fmt: skip
    assert default_key_warning(Ec2(denied)).startswith(
        "the account's default EBS key was not checked"
    )
