"""standin.iam: the IAM behaviour moto lacks.

Eventual consistency: "Because IAM is eventually consistent ... a role
you just created might not be usable right away" (IAM User Guide,
"Troubleshooting IAM": changes take time to propagate).  A role is fresh
after CreateRole (see common.mark_fresh): the first AttachRolePolicy or
GetRole naming it answers NoSuchEntity.
"""
import json
import re
import urllib.parse
import uuid

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


def _list(v):
    return v if isinstance(v, list) else [v]


def _glob(pattern, value):
    rx = "^" + ".*".join(re.escape(p) for p in pattern.lower().split("*")) + "$"
    return re.match(rx, value.lower()) is not None


def identity_policies(arn):
    """The policy documents attached to a user or role (inline, managed, and a user's groups')."""
    iam = moto_client("iam")
    docs = []

    def managed(attached):
        for a in attached:
            pol = iam.get_policy(PolicyArn=a["PolicyArn"])["Policy"]
            docs.append(iam.get_policy_version(PolicyArn=a["PolicyArn"], VersionId=pol["DefaultVersionId"])
                        ["PolicyVersion"]["Document"])
    kind, name = arn.split(":", 5)[5].split("/", 1)
    name = name.rsplit("/", 1)[-1]
    if kind == "user":
        for pn in iam.list_user_policies(UserName=name)["PolicyNames"]:
            docs.append(iam.get_user_policy(UserName=name, PolicyName=pn)["PolicyDocument"])
        managed(iam.list_attached_user_policies(UserName=name)["AttachedPolicies"])
        for g in iam.list_groups_for_user(UserName=name)["Groups"]:
            for pn in iam.list_group_policies(GroupName=g["GroupName"])["PolicyNames"]:
                docs.append(iam.get_group_policy(GroupName=g["GroupName"], PolicyName=pn)["PolicyDocument"])
            managed(iam.list_attached_group_policies(GroupName=g["GroupName"])["AttachedPolicies"])
    elif kind == "role":
        for pn in iam.list_role_policies(RoleName=name)["PolicyNames"]:
            docs.append(iam.get_role_policy(RoleName=name, PolicyName=pn)["PolicyDocument"])
        managed(iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"])
    else:
        raise ApiError("InvalidInput", "PolicySourceArn must be a user or role ARN", 400)
    return [json.loads(d) if isinstance(d, str) else d for d in docs]


def decide(docs, action):
    """IAM's evaluation of identity policies for one action on resource "*":
    an explicit Deny wins, then an Allow; else implicitDeny.  Statements
    with a Condition or a resource other than "*" do not apply (the
    simulator is asked about no particular resource)."""
    allowed = False
    for doc in docs:
        for st in _list(doc.get("Statement", [])):
            if st.get("Condition") or not any(r == "*" for r in _list(st.get("Resource", "*"))):
                continue
            if "Action" in st:
                hit = any(_glob(a, action) for a in _list(st["Action"]))
            else:
                hit = not any(_glob(a, action) for a in _list(st.get("NotAction", [])))
            if hit and st.get("Effect") == "Deny":
                return "explicitDeny"
            if hit and st.get("Effect") == "Allow":
                allowed = True
    return "allowed" if allowed else "implicitDeny"


def caller_arn():
    return moto_client("sts").get_caller_identity()["Arn"]


def simulate(h, form):
    """iam:SimulatePrincipalPolicy, which moto lacks ("Simulate how a set of
    IAM policies attached to an IAM entity works with a list of API
    operations", the IAM service model): EvalDecision allowed,
    explicitDeny or implicitDeny per action.  The caller needs
    iam:SimulatePrincipalPolicy itself (else AccessDenied)."""
    if decide(identity_policies(caller_arn()), "iam:SimulatePrincipalPolicy") != "allowed":
        raise ApiError("AccessDenied", "User: %s is not authorized to perform: iam:SimulatePrincipalPolicy"
                       % caller_arn(), 403)
    arn = form.get("PolicySourceArn", "")
    try:
        docs = identity_policies(arn)
    except botocore.exceptions.ClientError:
        raise ApiError("NoSuchEntity", "The entity %s cannot be found." % arn, 404)
    actions = [v for k, v in sorted(form.items(), key=lambda kv: int(kv[0].rsplit(".", 1)[-1])
                                    if kv[0].startswith("ActionNames.member.") else 0)
               if k.startswith("ActionNames.member.")]
    members = "".join("<member><EvalActionName>%s</EvalActionName><EvalResourceName>*</EvalResourceName>"
                      "<EvalDecision>%s</EvalDecision><MatchedStatements/><MissingContextValues/></member>"
                      % (a, decide(docs, a)) for a in actions)
    body = ('<SimulatePrincipalPolicyResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">'
            "<SimulatePrincipalPolicyResult><IsTruncated>false</IsTruncated><EvaluationResults>%s"
            "</EvaluationResults></SimulatePrincipalPolicyResult><ResponseMetadata><RequestId>%s</RequestId>"
            "</ResponseMetadata></SimulatePrincipalPolicyResponse>" % (members, uuid.uuid4())).encode()
    h._send(200, [("Content-Type", "text/xml")], body)
    return True


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
    if action == "SimulatePrincipalPolicy":
        return simulate(h, form)
    if action in ("AttachRolePolicy", "GetRole") and consume_fresh(["role:" + form.get("RoleName", "")]):
        raise ApiError("NoSuchEntity", "The role with name %s cannot be found." % form.get("RoleName"), 404)
    return None
