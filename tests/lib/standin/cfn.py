"""standin.cfn: CloudFormation resources moto skips (AWS::DMS::*,
AWS::SNS::Subscription) and SNS subscription confirmation."""
import datetime
import hashlib
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import botocore
import botocore.exceptions
import yaml
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials


from standin.common import *  # noqa: F401,F403
from standin import common as C
from standin.dms import ENDPOINTS, TASKS, Endpoint, Task, instance_created
from standin.iam import vpc_role_check

# ---------------------------------------------------------------------------
# CloudFormation: the AWS::DMS::* (and AWS::SNS::Subscription) resources
# moto skips, created from the template with their properties resolved
# ---------------------------------------------------------------------------


CFN_NS = "http://cloudformation.amazonaws.com/doc/2010-05-15/"
NOVALUE = object()


class CfnLoader(yaml.SafeLoader):
    pass


def _cfn_tag(tag):
    name = tag if tag in ("Ref", "Condition") else "Fn::" + tag

    def construct(loader, node):
        if isinstance(node, yaml.ScalarNode):
            v = loader.construct_scalar(node)
            if tag == "GetAtt":
                v = v.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            v = loader.construct_sequence(node, deep=True)
        else:
            v = loader.construct_mapping(node, deep=True)
        return {name: v}
    return construct


for _t in ("Ref", "Condition", "GetAtt", "Sub", "If", "Equals", "Not", "And", "Or", "Join", "Select",
           "Split", "FindInMap", "Base64", "GetAZs", "ImportValue", "Cidr"):
    CfnLoader.add_constructor("!" + _t, _cfn_tag(_t))


def load_template(text):
    text = text.strip()
    if text.startswith("{"):
        return json.loads(text)
    return yaml.load(text, Loader=CfnLoader)


class Resolver:
    """Evaluates CloudFormation intrinsic functions for one stack."""

    def __init__(self, template, params, stack_name, region):
        self.t = template
        self.params = {}
        for name, decl in (template.get("Parameters") or {}).items():
            v = params.get(name, decl.get("Default"))
            if v is not None and str(decl.get("Type", "")).startswith("List<") or decl.get("Type") == "CommaDelimitedList":
                v = [x.strip() for x in str(v).split(",") if x.strip()] if isinstance(v, str) else v
            self.params[name] = v
        self.pseudo = {"AWS::StackName": stack_name, "AWS::Region": region, "AWS::AccountId": ACCOUNT,
                       "AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com", "AWS::NoValue": NOVALUE,
                       "AWS::StackId": "arn:aws:cloudformation:%s:%s:stack/%s/x" % (region, ACCOUNT, stack_name)}
        self.refs = {}    # logical id -> Ref value
        self.attrs = {}   # (logical id, attr) -> value
        self._conds = {}

    def condition(self, name):
        if name not in self._conds:
            self._conds[name] = bool(self.value((self.t.get("Conditions") or {})[name]))
        return self._conds[name]

    def ref(self, name):
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.params:
            return self.params[name]
        if name in self.refs:
            return self.refs[name]
        raise KeyError("unresolved Ref %s" % name)

    def getatt(self, res, attr):
        if (res, attr) in self.attrs:
            return self.attrs[(res, attr)]
        raise KeyError("unresolved GetAtt %s.%s" % (res, attr))

    def sub(self, text, extra=None):
        def rep(m):
            name = m.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if extra and name in extra:
                return str(self.value(extra[name]))
            if "." in name and not name.startswith("AWS::"):
                r, a = name.split(".", 1)
                return str(self.getatt(r, a))
            v = self.ref(name)
            return ",".join(v) if isinstance(v, list) else str(v)
        return re.sub(r"\$\{([^}]+)\}", rep, text)

    def value(self, v):
        if isinstance(v, list):
            out = [self.value(x) for x in v]
            return [x for x in out if x is not NOVALUE]
        if not isinstance(v, dict):
            return v
        if len(v) == 1:
            (k, a), = v.items()
            if k == "Ref":
                return self.ref(a)
            if k == "Condition":
                return self.condition(a)
            if k == "Fn::GetAtt":
                return self.getatt(a[0], a[1])
            if k == "Fn::Sub":
                return self.sub(a) if isinstance(a, str) else self.sub(a[0], a[1])
            if k == "Fn::If":
                return self.value(a[1] if self.condition(a[0]) else a[2])
            if k == "Fn::Equals":
                return str(self.value(a[0])) == str(self.value(a[1]))
            if k == "Fn::Not":
                return not self.value(a[0])
            if k == "Fn::And":
                return all(self.value(x) for x in a)
            if k == "Fn::Or":
                return any(self.value(x) for x in a)
            if k == "Fn::Join":
                return a[0].join(str(x) for x in self.value(a[1]))
            if k == "Fn::Select":
                return self.value(a[1])[int(self.value(a[0]))]
            if k == "Fn::Split":
                return str(self.value(a[1])).split(a[0])
        out = {}
        for k, x in v.items():
            r = self.value(x)
            if r is not NOVALUE:
                out[k] = r
        return out


DMS_TYPES = ["AWS::DMS::ReplicationSubnetGroup", "AWS::DMS::ReplicationInstance", "AWS::DMS::Endpoint",
             "AWS::DMS::ReplicationTask"]


class Stack:
    def __init__(self, stack_id, name, template, params):
        self.id, self.name = stack_id, name
        self.template = template
        self.params = params
        self.status = "CREATE_IN_PROGRESS"
        self.reason = None
        self.events = []      # newest last
        self.created = {}     # logical id -> (type, physical id, arn)
        self.subs = []        # SNS subscription ARNs created here
        self.outputs = None
        self.done = threading.Event()

    def event(self, logical, rtype, status, physical="", reason=None):
        self.events.append({"EventId": str(uuid.uuid4()), "StackId": self.id, "StackName": self.name,
                            "LogicalResourceId": logical, "PhysicalResourceId": physical or "",
                            "ResourceType": rtype, "Timestamp": datetime.datetime.now(datetime.timezone.utc),
                            "ResourceStatus": status, "ResourceStatusReason": reason})


STACKS = {}   # stack id -> Stack
SUBSCRIPTIONS = {}   # subscription arn -> {"email", "t0"}


def moto_resources(stack_name):
    cf = moto_client("cloudformation")
    out = {}
    for r in cf.list_stack_resources(StackName=stack_name)["StackResourceSummaries"]:
        if r.get("LogicalResourceId"):
            out[r["LogicalResourceId"]] = (r["ResourceType"], r["PhysicalResourceId"])
    return out


def build_resolver(stack):
    res = Resolver(stack.template, stack.params, stack.name, C.ARGS.region)
    for logical, (rtype, phys) in moto_resources(stack.name).items():
        res.refs[logical] = phys
        if rtype == "AWS::IAM::Role":
            res.attrs[(logical, "Arn")] = "arn:aws:iam::%s:role/%s" % (ACCOUNT, phys)
        elif rtype == "AWS::S3::Bucket":
            res.attrs[(logical, "Arn")] = "arn:aws:s3:::%s" % phys
        elif rtype == "AWS::SNS::Topic":
            res.attrs[(logical, "TopicArn")] = phys
    for logical, (rtype, phys, arn) in stack.created.items():
        res.refs[logical] = phys
    return res


def int_props(props, names):
    for n in names:
        if n in props and isinstance(props[n], str) and props[n].isdigit():
            props[n] = int(props[n])
        if n in props and isinstance(props[n], str) and props[n] in ("true", "false"):
            props[n] = props[n] == "true"


def create_stack_resources(stack):
    """Create the template's DMS resources and email subscriptions (moto skips them)."""
    try:
        res = build_resolver(stack)
        resources = stack.template.get("Resources") or {}
        ordered = []
        for rtype in DMS_TYPES + ["AWS::SNS::Subscription"]:
            for logical, r in resources.items():
                if r.get("Type") == rtype:
                    ordered.append((logical, r))
        for logical, r in ordered:
            if "Condition" in r and not res.condition(r["Condition"]):
                continue
            rtype = r["Type"]
            stack.event(logical, rtype, "CREATE_IN_PROGRESS")
            try:
                props = res.value(r.get("Properties") or {})
                phys, arn = create_one(stack, logical, rtype, props)
            except Exception as e:   # noqa: BLE001 - reported as CloudFormation does
                reason = getattr(e, "message", None) or str(e)
                log("stack %s: %s %s failed: %s", stack.name, rtype, logical, reason)
                stack.event(logical, rtype, "CREATE_FAILED", reason="Resource handler returned message: \"%s\"" % reason)
                stack.event(stack.name, "AWS::CloudFormation::Stack", "ROLLBACK_IN_PROGRESS",
                            reason="The following resource(s) failed to create: [%s]. Rollback requested by user." % logical)
                delete_stack_resources(stack)
                stack.event(stack.name, "AWS::CloudFormation::Stack", "ROLLBACK_COMPLETE")
                stack.status, stack.reason = "ROLLBACK_COMPLETE", "The following resource(s) failed to create: [%s]." % logical
                return
            stack.created[logical] = (rtype, phys, arn)
            res.refs[logical] = phys
            stack.event(logical, rtype, "CREATE_COMPLETE", physical=phys)
        # outputs, now that every resource has its physical id
        outs = []
        for key, o in (stack.template.get("Outputs") or {}).items():
            if "Condition" in o and not res.condition(o["Condition"]):
                continue
            outs.append({"OutputKey": key, "OutputValue": str(res.value(o["Value"])),
                         "Description": o.get("Description")})
        stack.outputs = outs
        stack.event(stack.name, "AWS::CloudFormation::Stack", "CREATE_COMPLETE")
        stack.status = "CREATE_COMPLETE"
    except Exception as e:  # noqa: BLE001
        log("stack %s: %s", stack.name, traceback.format_exc())
        stack.status, stack.reason = "CREATE_FAILED", str(e)
        stack.event(stack.name, "AWS::CloudFormation::Stack", "CREATE_FAILED", reason=str(e))
    finally:
        stack.done.set()


def create_one(stack, logical, rtype, props):
    if rtype in ("AWS::DMS::ReplicationSubnetGroup", "AWS::DMS::ReplicationInstance"):
        vpc_role_check()
    if rtype == "AWS::DMS::ReplicationSubnetGroup":
        props.setdefault("ReplicationSubnetGroupIdentifier", ("%s-%s" % (stack.name, logical)).lower())
        json_call("CreateReplicationSubnetGroup", props)
        return props["ReplicationSubnetGroupIdentifier"], None
    if rtype == "AWS::DMS::ReplicationInstance":
        props.setdefault("ReplicationInstanceIdentifier", ("%s-%s" % (stack.name, logical)).lower())
        int_props(props, ["AllocatedStorage", "MultiAZ", "PubliclyAccessible", "AutoMinorVersionUpgrade"])
        r = json_call("CreateReplicationInstance", props)["ReplicationInstance"]
        instance_created(r["ReplicationInstanceArn"], props["ReplicationInstanceIdentifier"])
        return r["ReplicationInstanceArn"], r["ReplicationInstanceArn"]
    if rtype == "AWS::DMS::Endpoint":
        props.setdefault("EndpointIdentifier", ("%s-%s" % (stack.name, logical)).lower())
        int_props(props, ["Port"])
        if "PostgreSqlSettings" in props:
            props["PostgreSQLSettings"] = props.pop("PostgreSqlSettings")
        if props.get("Password"):
            SECRETS.add(props["Password"])
        r = json_call("CreateEndpoint", props)["Endpoint"]
        with LOCK:
            ENDPOINTS[r["EndpointArn"]] = Endpoint(r["EndpointArn"], props)
        return r["EndpointArn"], r["EndpointArn"]
    if rtype == "AWS::DMS::ReplicationTask":
        props.setdefault("ReplicationTaskIdentifier", ("%s-%s" % (stack.name, logical)).lower())
        for k in ("TableMappings", "ReplicationTaskSettings"):
            if isinstance(props.get(k), dict):
                props[k] = json.dumps(props[k])
        r = json_call("CreateReplicationTask", props)["ReplicationTask"]
        with LOCK:
            TASKS[r["ReplicationTaskArn"]] = Task(r["ReplicationTaskArn"], props, r)
        return r["ReplicationTaskArn"], r["ReplicationTaskArn"]
    if rtype == "AWS::SNS::Subscription":
        r = moto_client("sns").subscribe(TopicArn=props["TopicArn"], Protocol=props["Protocol"],
                                         Endpoint=props["Endpoint"], ReturnSubscriptionArn=True)
        arn = r["SubscriptionArn"]
        SUBSCRIPTIONS[arn] = {"email": props["Endpoint"], "t0": now_epoch()}
        stack.subs.append(arn)
        return arn, arn
    raise ApiError("UnsupportedResource", rtype)


def delete_stack_resources(stack):
    """Delete what create_stack_resources made, in reverse dependency order."""
    order = ["AWS::SNS::Subscription", "AWS::DMS::ReplicationTask", "AWS::DMS::Endpoint",
             "AWS::DMS::ReplicationInstance", "AWS::DMS::ReplicationSubnetGroup"]
    for rtype in order:
        for logical, (t, phys, arn) in list(stack.created.items()):
            if t != rtype:
                continue
            stack.event(logical, t, "DELETE_IN_PROGRESS", physical=phys)
            try:
                if t == "AWS::DMS::ReplicationTask":
                    task = TASKS.get(phys)
                    if task and task.status in ("running", "starting"):
                        task.stop()
                        for _ in range(100):
                            if task.status not in ("stopping", "running", "starting"):
                                break
                            time.sleep(0.1)
                    if task:
                        task.drop_movement()
                    json_call("DeleteReplicationTask", {"ReplicationTaskArn": phys})
                    TASKS.pop(phys, None)
                elif t == "AWS::DMS::Endpoint":
                    json_call("DeleteEndpoint", {"EndpointArn": phys})
                    ENDPOINTS.pop(phys, None)
                elif t == "AWS::DMS::ReplicationInstance":
                    json_call("DeleteReplicationInstance", {"ReplicationInstanceArn": phys})
                elif t == "AWS::DMS::ReplicationSubnetGroup":
                    json_call("DeleteReplicationSubnetGroup", {"ReplicationSubnetGroupIdentifier": phys})
                elif t == "AWS::SNS::Subscription":
                    moto_client("sns").unsubscribe(SubscriptionArn=phys)
                    SUBSCRIPTIONS.pop(phys, None)
            except ApiError as e:
                if e.code != "ResourceNotFoundFault":
                    raise
            except Exception as e:   # noqa: BLE001
                if "NotFound" not in str(e):
                    raise
            del stack.created[logical]
            stack.event(logical, t, "DELETE_COMPLETE", physical=phys)



class CfnRoute:
    @staticmethod
    def route(h, body):
        form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(), keep_blank_values=True).items()}
        action = form.get("Action")
        if action == "CreateStack":
            return cfn_create(h, body, form)
        if action == "DescribeStacks":
            return cfn_describe(h, body, form)
        if action == "DescribeStackEvents":
            return cfn_events(h, body, form)
        if action == "DeleteStack":
            return cfn_delete(h, body, form)
        return None


def stack_by_name(name):
    for s in STACKS.values():
        if name in (s.name, s.id):
            return s
    return None


def template_text(form):
    if form.get("TemplateBody"):
        return form["TemplateBody"]
    url = form.get("TemplateURL")
    if not url:
        return None
    u = urllib.parse.urlsplit(url)
    path = u.path.lstrip("/")
    if u.hostname and ".s3" in u.hostname and not u.hostname.startswith("s3"):
        bucket, key = u.hostname.split(".s3", 1)[0], path
    else:
        bucket, key = path.split("/", 1)
    return moto_client("s3").get_object(Bucket=bucket, Key=urllib.parse.unquote(key))["Body"].read().decode()


def cfn_create(h, body, form):
    status, hdrs, data = forward(h.command, h.path, h.headers, body)
    if status >= 300:
        h._send(status, hdrs, data)
        return True
    root, ns = xml_result(data)
    stack_id = root.find(".//" + q(ns, "StackId")).text
    params = {}
    i = 1
    while "Parameters.member.%d.ParameterKey" % i in form:
        params[form["Parameters.member.%d.ParameterKey" % i]] = form.get("Parameters.member.%d.ParameterValue" % i, "")
        i += 1
    for k, v in params.items():
        if "password" in k.lower() and v:
            SECRETS.add(v)
    text = template_text(form)
    stack = Stack(stack_id, form["StackName"], load_template(text), params)
    STACKS[stack_id] = stack
    mark_fresh("stack:" + stack_id, "stack:" + form["StackName"])
    stack.event(stack.name, "AWS::CloudFormation::Stack", "CREATE_IN_PROGRESS", reason="User Initiated")

    def later():
        time.sleep(delay("stack"))   # the creation takes a while, as it does on AWS
        create_stack_resources(stack)
    threading.Thread(target=later, daemon=True).start()
    log("stack %s created (%d DMS resources to create)", stack.name,
        sum(1 for r in (stack.template.get("Resources") or {}).values() if r.get("Type") in DMS_TYPES))
    h._send(status, hdrs, data)
    return True


def cfn_describe(h, body, form):
    if form.get("StackName") and consume_fresh(["stack:" + form["StackName"]]):
        raise ApiError("ValidationError", "Stack with id %s does not exist" % form["StackName"])
    status, hdrs, data = forward(h.command, h.path, h.headers, body)
    if status >= 300:
        stack = stack_by_name(form.get("StackName", ""))
        if stack and stack.status == "DELETE_COMPLETE" and form.get("StackName") == stack.id:
            pass
        h._send(status, hdrs, data)
        return True
    root, ns = xml_result(data)
    for member in root.iter(q(ns, "member")):
        sid = member.find(q(ns, "StackId"))
        if sid is None:
            continue
        stack = STACKS.get(sid.text)
        if stack is None:
            continue
        if stack.status != "CREATE_COMPLETE" or member.find(q(ns, "StackStatus")).text == "CREATE_COMPLETE":
            set_text(member, ns, "StackStatus", stack.status if stack.status != "DELETED" else "DELETE_COMPLETE")
        if stack.reason:
            set_text(member, ns, "StackStatusReason", stack.reason)
        if stack.outputs is not None:
            old = member.find(q(ns, "Outputs"))
            if old is not None:
                member.remove(old)
            outs = ET.SubElement(member, q(ns, "Outputs"))
            for o in stack.outputs:
                m = ET.SubElement(outs, q(ns, "member"))
                ET.SubElement(m, q(ns, "OutputKey")).text = o["OutputKey"]
                ET.SubElement(m, q(ns, "OutputValue")).text = o["OutputValue"]
                if o.get("Description"):
                    ET.SubElement(m, q(ns, "Description")).text = o["Description"]
    h._send(status, hdrs, to_xml(root, ns))
    return True


def cfn_events(h, body, form):
    status, hdrs, data = forward(h.command, h.path, h.headers, body)
    stack = stack_by_name(form.get("StackName", ""))
    if status >= 300 or stack is None:
        h._send(status, hdrs, data)
        return True
    root, ns = xml_result(data)
    events = root.find(".//" + q(ns, "StackEvents"))
    existing = list(events)
    for e in existing:
        events.remove(e)
    mine = []
    for ev in stack.events:
        m = ET.Element(q(ns, "member"))
        for k in ("EventId", "StackId", "StackName", "LogicalResourceId", "PhysicalResourceId", "ResourceType",
                  "ResourceStatus", "ResourceStatusReason"):
            if ev.get(k) is not None:
                ET.SubElement(m, q(ns, k)).text = str(ev[k])
        ET.SubElement(m, q(ns, "Timestamp")).text = iso(ev["Timestamp"])
        mine.append(m)
    for m in reversed(mine):      # newest first, as CloudFormation lists them
        events.append(m)
    h._send(status, hdrs, to_xml(root, ns))
    return True


def cfn_delete(h, body, form):
    stack = stack_by_name(form.get("StackName", ""))
    if stack is None:
        return None
    # a bucket that still holds object versions cannot be deleted: the
    # stack goes to DELETE_FAILED, as on AWS
    for logical, (rtype, phys) in moto_resources(stack.name).items():
        if rtype == "AWS::S3::Bucket":
            try:
                r = moto_client("s3").list_object_versions(Bucket=phys)
            except Exception:  # noqa: BLE001
                continue
            if r.get("Versions") or r.get("DeleteMarkers"):
                stack.event(stack.name, "AWS::CloudFormation::Stack", "DELETE_IN_PROGRESS", reason="User Initiated")
                stack.event(logical, rtype, "DELETE_FAILED", physical=phys,
                            reason="The bucket you tried to delete is not empty. You must delete all versions "
                                   "in the bucket. (Service: S3, Status Code: 409, Error Code: BucketNotEmpty)")
                stack.event(stack.name, "AWS::CloudFormation::Stack", "DELETE_FAILED",
                            reason="The following resource(s) failed to delete: [%s]." % logical)
                stack.status, stack.reason = "DELETE_FAILED", "The following resource(s) failed to delete: [%s]." % logical
                h._send(200, [("Content-Type", "text/xml")],
                        ('<DeleteStackResponse xmlns="%s"><ResponseMetadata><RequestId>%s</RequestId>'
                         '</ResponseMetadata></DeleteStackResponse>' % (CFN_NS, uuid.uuid4())).encode())
                return True
    stack.event(stack.name, "AWS::CloudFormation::Stack", "DELETE_IN_PROGRESS", reason="User Initiated")
    delete_stack_resources(stack)
    status, hdrs, data = forward(h.command, h.path, h.headers, body)
    if status < 300:
        stack.event(stack.name, "AWS::CloudFormation::Stack", "DELETE_COMPLETE")
        stack.status, stack.reason = "DELETE_COMPLETE", None
    h._send(status, hdrs, data)
    return True


def sns_route(h, body):
    form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(), keep_blank_values=True).items()}
    if form.get("Action") not in ("ListSubscriptionsByTopic", "ListSubscriptions"):
        return None
    status, hdrs, data = forward(h.command, h.path, h.headers, body)
    if status >= 300:
        h._send(status, hdrs, data)
        return True
    root, ns = xml_result(data)
    for member in root.iter(q(ns, "member")):
        arn = member.find(q(ns, "SubscriptionArn"))
        sub = SUBSCRIPTIONS.get(arn.text if arn is not None else None)
        # an email subscription is pending until its recipient confirms:
        # here the recipient "clicks" after 1.5 s, except addresses that
        # contain "noconfirm"
        if sub and ("noconfirm" in sub["email"] or now_epoch() - sub["t0"] < 1.5):
            arn.text = "PendingConfirmation"
    h._send(status, hdrs, to_xml(root, ns))
    return True




CFN = CfnRoute()
