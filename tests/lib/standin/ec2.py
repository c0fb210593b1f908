"""standin.ec2: the EC2 behaviour moto lacks.

Eventual consistency: "If you try to use a resource right after it is
created ... you might get an error that it does not exist" (Amazon EC2 API
Reference, "Eventual consistency in the Amazon EC2 API").  A security
group is fresh after CreateSecurityGroup (see common.mark_fresh): the
first AuthorizeSecurityGroupIngress or DescribeSecurityGroups naming it
answers InvalidGroup.NotFound.  Everything else is moto's.
"""
import re
import urllib.parse

from standin.common import ApiError, consume_fresh, forward, mark_fresh, q, xml_result


def form_of(body):
    return {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(), keep_blank_values=True).items()}


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
    if action in ("AuthorizeSecurityGroupIngress", "DescribeSecurityGroups"):
        groups = [v for k, v in form.items() if re.fullmatch(r"(GroupId(\.\d+)?|.*\.GroupId)", k)]
        if groups and consume_fresh(groups):
            raise ApiError("InvalidGroup.NotFound", "The security group '%s' does not exist" % groups[0],
                           shape="ec2")
    return None
