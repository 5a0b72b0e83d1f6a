"""The ec2 clusters' spark.authenticate secret: the primary puts it under the cluster's
log prefix, where only the nodes' role may read or write it (Airflow's role reads the
rest of logs/)."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from pathlib import Path

from infra.check_policies import findings, load

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "fruits-pipeline.yaml"
USER_DATA = ROOT / "plugins" / "fruits" / "clusters" / "ec2" / "node" / "user_data.sh"


def test_only_the_node_role_reads_the_secret_the_user_data_writes():
    template = load(TEMPLATE)
    statements = template["Resources"]["DataBucketPolicy"]["Properties"]["PolicyDocument"]
    (deny,) = [
        st for st in statements["Statement"] if st.get("Sid") == "ClusterSecretsForTheNodesOnly"
    ]
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*"
    assert set(deny["Action"]) == {"s3:GetObject", "s3:PutObject"}
    assert deny["Condition"] == {
        "ArnNotEquals": {"aws:PrincipalArn": {"Fn::GetAtt": ["Ec2NodeRole", "Arn"]}}
    }
    pattern = deny["Resource"]["Fn::Sub"].replace("${DataBucket.Arn}/", "")
    # where the user data puts it, for a cluster's log prefix (logs/ec2/<cluster>/)
    uri = re.search(r'^SECRET_URI="\$\{LOG_PREFIX\}(\S+)"$', USER_DATA.read_text(), re.M)
    assert uri, "the user data names no SECRET_URI"
    key = f"logs/ec2/ec2-run-1/attempt-2/{uri.group(1)}"
    assert fnmatchcase(key, pattern)
    assert not fnmatchcase("logs/ec2/ec2-run-1/ready.json", pattern)  # Airflow reads those
    assert findings(template) == []
