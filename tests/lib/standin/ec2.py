"""standin.ec2: the EC2 behaviour moto lacks.

Eventual consistency: "If you try to use a resource right after it is
created ... you might get an error that it does not exist" (Amazon EC2 API
Reference, "Eventual consistency in the Amazon EC2 API").  A security
group is fresh after CreateSecurityGroup (see common.mark_fresh): the
first AuthorizeSecurityGroupIngress or DescribeSecurityGroups naming it
answers InvalidGroup.NotFound.  DescribeSecurityGroupRules also shows the
description of rules admitting a group (moto drops it).  Everything else
is moto's.
"""
import re
import urllib.parse
import xml.etree.ElementTree as ET

from standin.common import ApiError, consume_fresh, forward, mark_fresh, moto_client, q, to_xml, xml_result


def form_of(body):
    return {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(), keep_blank_values=True).items()}


def describe_rules(h, body):
    """DescribeSecurityGroupRules with the description of rules that admit
    a security group: EC2 keeps the UserIdGroupPair's Description as the
    rule's (AWS::EC2::SecurityGroupIngress, SecurityGroupRule.Description),
    moto 5.2.1 only the CIDR range's."""
    status, hdrs, data = forward(h.command, h.path, h.headers, body)
    if status >= 300:
        h._send(status, hdrs, data)
        return True
    root, ns = xml_result(data)
    cache = {}
    for item in root.iter(q(ns, "item")):
        ref = item.find(q(ns, "referencedGroupInfo"))
        desc = item.find(q(ns, "description"))
        if ref is None or (desc is not None and desc.text):
            continue
        gid, ref_gid = item.findtext(q(ns, "groupId")), ref.findtext(q(ns, "groupId"))
        if gid not in cache:
            try:
                cache[gid] = moto_client("ec2").describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]
            except Exception:  # noqa: BLE001
                cache[gid] = {}
        perms = cache[gid].get("IpPermissions" if item.findtext(q(ns, "isEgress")) != "true" else "IpPermissionsEgress", [])
        for perm in perms:
            if str(perm.get("FromPort", -1)) != (item.findtext(q(ns, "fromPort")) or "-1"):
                continue
            for pair in perm.get("UserIdGroupPairs", []):
                if pair.get("GroupId") == ref_gid and pair.get("Description"):
                    if desc is None:
                        desc = ET.SubElement(item, q(ns, "description"))
                    desc.text = pair["Description"]
    h._send(status, hdrs, to_xml(root, ns))
    return True


def route(h, body):
    form = form_of(body)
    action = form.get("Action")
    if action == "CreateSecurityGroup":
        status, hdrs, data = forward(h.command, h.path, h.headers, body)
        if status < 300:
            root, ns = xml_result(data)
            gid = root.find(".//" + q(ns, "groupId"))
            if gid is not None:
                mark_fresh(gid.text)
        h._send(status, hdrs, data)
        return True
    if action == "DescribeSecurityGroupRules":
        return describe_rules(h, body)
    if action in ("AuthorizeSecurityGroupIngress", "DescribeSecurityGroups"):
        groups = [v for k, v in form.items() if re.fullmatch(r"(GroupId(\.\d+)?|.*\.GroupId)", k)]
        if groups and consume_fresh(groups):
            raise ApiError("InvalidGroup.NotFound", "The security group '%s' does not exist" % groups[0],
                           shape="ec2")
    return None
