"""standin.iam: the IAM behaviour moto lacks.

Eventual consistency: "Because IAM is eventually consistent ... a role
you just created might not be usable right away" (IAM User Guide,
"Troubleshooting IAM": changes take time to propagate).  A role is fresh
after CreateRole (see common.mark_fresh): the first AttachRolePolicy or
GetRole naming it answers NoSuchEntity.
"""
import urllib.parse

import botocore.exceptions

from standin.common import ACCOUNT, ApiError, consume_fresh, delay, forward, mark_fresh, moto_client, now_epoch

VPC_ROLE_POLICY = "arn:aws:iam::aws:policy/service-role/AmazonDMSVPCManagementRole"


def vpc_role_check():
    """Raise AccessDeniedFault when DMS could not use dms-vpc-role yet.

    DMS places subnet groups and instances with the role dms-vpc-role
    (AmazonDMSVPCManagementRole).  Without it, CreateReplicationSubnetGroup
    and CreateReplicationInstance answer AccessDeniedFault ("DMS was denied
    access to the endpoint. Check that the role is correctly configured.",
    the service model; the message AWS gives names the role), and a role
    made moments ago is not usable until IAM has propagated it: here for
    delay("iam") seconds after its creation.
    """
    msg = "The IAM Role arn:aws:iam::%s:role/dms-vpc-role is not configured properly." % ACCOUNT
    iam = moto_client("iam")
    try:
        role = iam.get_role(RoleName="dms-vpc-role")["Role"]
        attached = [p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName="dms-vpc-role")["AttachedPolicies"]]
    except botocore.exceptions.ClientError:
        raise ApiError("AccessDeniedFault", msg)
    if VPC_ROLE_POLICY not in attached:
        raise ApiError("AccessDeniedFault", msg)
    if now_epoch() - role["CreateDate"].timestamp() < delay("iam"):
        raise ApiError("AccessDeniedFault", msg + " (IAM propagation)")


def form_of(body):
    return {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(), keep_blank_values=True).items()}


def route(h, body):
    form = form_of(body)
    action = form.get("Action")
    if action == "CreateRole":
        status, hdrs, data = forward(h.command, h.path, h.headers, body)
        if status < 300:
            mark_fresh("role:" + form.get("RoleName", ""))
        h._send(status, hdrs, data)
        return True
    if action in ("AttachRolePolicy", "GetRole") and consume_fresh(["role:" + form.get("RoleName", "")]):
        raise ApiError("NoSuchEntity", "The role with name %s cannot be found." % form.get("RoleName"), 404)
    return None
