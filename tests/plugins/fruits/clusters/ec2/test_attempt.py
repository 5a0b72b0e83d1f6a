"""An attempt's log prefix and ``ClientToken``: a rerun never reads a previous attempt's
markers, a retried ``RunInstances`` call never launches a second cluster."""

from __future__ import annotations

import re

import pytest

from fruits.clusters.ec2.attempt import attempt_prefix, client_token, new_attempt

LOG = "s3://fruits-test/logs/ec2/ec2-run-1a2b3c4d/"


def test_each_attempt_reports_under_a_prefix_of_its_own():
    first, again, second = new_attempt(1), new_attempt(1), new_attempt(2)
    assert re.fullmatch(r"1-[0-9a-f]{8}", first) and second.startswith("2-")
    assert first != again  # even the same try number (a database reset) gets a new one
    prefixes = {attempt_prefix(LOG, a) for a in (first, again, second)}
    assert len(prefixes) == 3
    for prefix in prefixes:
        assert prefix.startswith(LOG + "attempt-") and prefix.endswith("/")
        assert prefix != LOG  # never the cluster's own prefix, where old runs reported


@pytest.mark.parametrize(("prefix", "attempt"), [(LOG[:-1], "1-ab"), (LOG, "../x"), (LOG, "")])
def test_bad_prefixes_and_attempts_are_refused(prefix, attempt):
    with pytest.raises(ValueError):
        attempt_prefix(prefix, attempt)


def test_the_client_token_is_stable_within_a_try_and_new_for_the_next():
    token = client_token("manual__2026-11-24", "ec2-x-1a2b", 1, "primary")
    assert token == client_token("manual__2026-11-24", "ec2-x-1a2b", 1, "primary")
    others = {
        client_token("manual__2026-11-24", "ec2-x-1a2b", 2, "primary"),  # next try
        client_token("manual__2026-11-24", "ec2-x-1a2b", 1, "worker"),  # other role
        client_token("manual__2026-11-24", "ec2-y-5e6f", 1, "primary"),  # other cluster
        client_token("scheduled__2026-11-25", "ec2-x-1a2b", 1, "primary"),  # other run
    }
    assert token not in others and len(others) == 4
    assert len(token) <= 64 and token.isascii()  # EC2's limit
