"""standin.iam: the IAM behaviour moto lacks.

Eventual consistency: "Because IAM is eventually consistent ... a role
you just created might not be usable right away" (IAM User Guide,
"Troubleshooting IAM": changes take time to propagate).  A role is fresh
after CreateRole (see common.mark_fresh): the first AttachRolePolicy or
GetRole naming it answers NoSuchEntity.
"""
import urllib.parse

from standin.common import ApiError, consume_fresh, forward, mark_fresh


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
