#!/usr/bin/env python3
"""aws_model_gen.py: write pgtide's compact AWS service models.

Usage: aws_model_gen.py [--check] [OUTDIR]   (default lua/pgtide/aws/model)

For each service pgtide talks to, reads botocore's service-2.json and
paginators-1.json (the pyenv botocore), keeps the operations listed below
and every shape they reach, drops documentation, enums and constraints,
and writes lua/pgtide/aws/model/<service>.lua: the facts the serializers
and parsers in lua/pgtide/aws/ need (protocol metadata, HTTP bindings,
member names and locations, list/map/structure shapes, required members,
timestamp formats, sensitive shapes, paginators).

--check compares the committed files with what would be generated and
exits 1 when they differ (run by tests/integration/test_aws_model.sh).
"""
import gzip
import json
import os
import sys

import botocore

SERVICES = {
    "dms": [
        "CreateReplicationSubnetGroup", "DescribeReplicationSubnetGroups",
        "DeleteReplicationSubnetGroup", "CreateReplicationInstance",
        "DescribeReplicationInstances", "DeleteReplicationInstance",
        "ModifyReplicationInstance", "CreateEndpoint", "DescribeEndpoints", "ModifyEndpoint",
        "DeleteEndpoint", "TestConnection", "DescribeConnections", "CreateReplicationTask",
        "ModifyReplicationTask", "StartReplicationTask", "StopReplicationTask",
        "DescribeReplicationTasks", "DeleteReplicationTask", "DescribeTableStatistics",
        "ReloadTables", "StartReplicationTaskAssessment", "StartReplicationTaskAssessmentRun",
        "DescribeReplicationTaskAssessmentRuns", "DescribeReplicationTaskAssessmentResults",
        "DescribeReplicationTaskIndividualAssessments",
        "DescribeApplicableIndividualAssessments", "DescribeAccountAttributes",
        "DescribeOrderableReplicationInstances", "ListTagsForResource", "AddTagsToResource",
        "DescribeCertificates", "ImportCertificate", "DeleteCertificate", "DescribeEvents",
    ],
    "cloudformation": [
        "CreateStack", "UpdateStack", "DeleteStack", "DescribeStacks", "DescribeStackEvents",
        "DescribeStackResources", "ListStackResources", "ListStacks", "ValidateTemplate",
        "GetTemplate",
    ],
    "sns": [
        "CreateTopic", "DeleteTopic", "Subscribe", "Unsubscribe", "ListSubscriptionsByTopic",
        "ListTopics", "Publish", "GetTopicAttributes", "SetTopicAttributes",
    ],
    "stepfunctions": [
        "CreateStateMachine", "UpdateStateMachine", "DeleteStateMachine",
        "DescribeStateMachine", "ListStateMachines", "StartExecution", "StopExecution",
        "DescribeExecution", "ListExecutions", "GetExecutionHistory",
    ],
    "s3": [
        "CreateBucket", "DeleteBucket", "HeadBucket", "GetBucketLocation",
        "PutBucketVersioning", "GetBucketVersioning", "ListObjectsV2", "ListObjectVersions",
        "PutObject", "GetObject", "HeadObject", "DeleteObject", "DeleteObjects",
        "PutBucketTagging",
    ],
    "ec2": [
        "DescribeSecurityGroups", "DescribeSecurityGroupRules", "CreateSecurityGroup",
        "DeleteSecurityGroup", "AuthorizeSecurityGroupIngress", "RevokeSecurityGroupIngress",
        "AuthorizeSecurityGroupEgress", "RevokeSecurityGroupEgress", "DescribeVpcs",
        "DescribeSubnets",
    ],
    "iam": [
        "GetRole", "CreateRole", "DeleteRole", "AttachRolePolicy", "DetachRolePolicy",
        "ListAttachedRolePolicies", "PutRolePolicy", "DeleteRolePolicy", "ListRolePolicies",
        "GetUser", "CreateUser", "PutUserPolicy", "CreateAccessKey",
    ],
    "sts": ["GetCallerIdentity", "AssumeRole", "AssumeRoleWithWebIdentity"],
    "cloudwatch": ["GetMetricData", "GetMetricStatistics", "ListMetrics"],
}

# botocore client name -> the snake-case id of AWS_ENDPOINT_URL_<ID> and
# of [services] sections (botocore utils CLIENT_NAME_TO_HYPHENIZED...).
ENV_IDS = {"dms": "database_migration_service", "stepfunctions": "sfn"}

URL_ENCODED = {"iam": ["policyDocumentType"]}

MEMBER_KEYS = ["location", "locationName", "queryName", "flattened", "xmlNamespace",
               "xmlAttribute", "jsonvalue", "idempotencyToken", "timestampFormat",
               "hostLabel", "contextParam"]
SHAPE_KEYS = ["flattened", "locationName", "xmlNamespace", "payload", "sensitive",
              "timestampFormat", "document", "union", "streaming", "requiresLength"]


def deep_merge(dst, src):
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            deep_merge(dst[k], v)
        else:
            dst[k] = v


def load(service, name):
    """A botocore data file, with its .sdk-extras.json merged in as botocore's
    loader does (S3's Expires is a timestamp only through that file)."""
    base = os.path.join(os.path.dirname(botocore.__file__), "data", service)
    version = sorted(os.listdir(base))[-1]
    path = os.path.join(base, version, name)
    data = None
    if os.path.exists(path + ".gz"):
        with gzip.open(path + ".gz") as f:
            data = json.load(f)
    elif os.path.exists(path):
        with open(path) as f:
            data = json.load(f)
    extras = path.replace(".json", ".sdk-extras.json")
    if data is not None and os.path.exists(extras):
        with open(extras) as f:
            deep_merge(data, json.load(f).get("merge", {}))
    return data, version


def compact_member(ref):
    out = {"shape": ref["shape"]}
    for k in MEMBER_KEYS:
        if k in ref:
            v = ref[k]
            if k == "xmlNamespace":
                v = v.get("uri") if isinstance(v, dict) else v
            if k == "contextParam":
                v = v.get("name")
            out[k] = v
    return out


def compact_shape(shape):
    out = {"type": shape["type"]}
    for k in SHAPE_KEYS:
        if k in shape:
            v = shape[k]
            if k == "xmlNamespace":
                v = v.get("uri") if isinstance(v, dict) else v
            out[k] = v
    t = shape["type"]
    if t == "structure":
        out["members"] = {n: compact_member(r) for n, r in shape.get("members", {}).items()}
        if shape.get("required"):
            out["required"] = list(shape["required"])
    elif t == "list":
        out["member"] = compact_member(shape["member"])
    elif t == "map":
        out["key"] = compact_member(shape["key"])
        out["value"] = compact_member(shape["value"])
    return out


def reach(model, names):
    shapes, todo = {}, list(names)
    while todo:
        n = todo.pop()
        if n in shapes:
            continue
        s = model["shapes"][n]
        shapes[n] = compact_shape(s)
        if s["type"] == "structure":
            todo.extend(r["shape"] for r in s.get("members", {}).values())
        elif s["type"] == "list":
            todo.append(s["member"]["shape"])
        elif s["type"] == "map":
            todo.extend([s["key"]["shape"], s["value"]["shape"]])
    return shapes


def listify(v):
    if v is None:
        return None
    return v if isinstance(v, list) else [v]


def build(service):
    model, version = load(service, "service-2.json")
    pag, _ = load(service, "paginators-1.json")
    md = model["metadata"]
    protocol = md["protocol"]
    if protocol not in ("json", "query", "ec2", "rest-xml"):
        # CloudWatch lists smithy-rpc-v2-cbor first; we speak its JSON 1.0 form
        protocol = "json" if "json" in md.get("protocols", []) else "query"
    meta = {
        "api_version": md["apiVersion"],
        "protocol": protocol,
        "json_version": md.get("jsonVersion") if protocol == "json" else None,
        "target_prefix": md.get("targetPrefix") if protocol == "json" else None,
        "signing_name": md.get("signingName") or md["endpointPrefix"],
        "endpoint_prefix": md["endpointPrefix"],
        "service_id": md["serviceId"],
        "env_id": ENV_IDS.get(service, service),
        "global_endpoint": md.get("globalEndpoint"),
        "xml_namespace": (md.get("xmlNamespace") or {}).get("uri")
        if isinstance(md.get("xmlNamespace"), dict) else md.get("xmlNamespace"),
        "query_compatible": True if "awsQueryCompatible" in md else None,
    }
    ops, roots = {}, []
    for name in SERVICES[service]:
        op = model["operations"][name]
        o = {"method": op["http"]["method"], "uri": op["http"]["requestUri"]}
        if "input" in op:
            o["input"] = op["input"]["shape"]
            roots.append(op["input"]["shape"])
            if "locationName" in op["input"]:
                o["input_location_name"] = op["input"]["locationName"]
            if "xmlNamespace" in op["input"]:
                o["input_xml_namespace"] = op["input"]["xmlNamespace"]["uri"]
        if "output" in op:
            o["output"] = op["output"]["shape"]
            roots.append(op["output"]["shape"])
            if "resultWrapper" in op["output"]:
                o["result_wrapper"] = op["output"]["resultWrapper"]
        chk = op.get("httpChecksum", {})
        if chk.get("requestChecksumRequired") or op.get("httpChecksumRequired"):
            o["checksum_required"] = True
        if op.get("authtype") == "none" or "smithy.api#noAuth" in op.get("auth", []):
            o["unsigned"] = True
        ops[name] = o
    paginators = {}
    for name, p in ((pag or {}).get("pagination") or {}).items():
        if name in ops:
            paginators[name] = {
                "input_token": listify(p.get("input_token")),
                "output_token": listify(p.get("output_token")),
                "limit_key": p.get("limit_key"),
                "result_key": listify(p.get("result_key")),
                "more_results": p.get("more_results"),
            }
    shapes = reach(model, roots)
    # IAM returns policy documents URL-encoded (botocore's json_decode_policies
    # handler undoes it): mark those shapes so the parser decodes them.
    for name in URL_ENCODED.get(service, []):
        if name in shapes:
            shapes[name]["url_encoded"] = True
    return {
        "source": "botocore %s data/%s/%s" % (botocore.__version__, service, version),
        "metadata": {k: v for k, v in meta.items() if v is not None},
        "operations": ops,
        "paginators": paginators,
        "shapes": shapes,
    }


def lua_key(k):
    if k.isidentifier() and k not in ("and", "end", "for", "function", "if", "in",
                                       "local", "nil", "not", "or", "repeat", "return",
                                       "then", "until", "while", "true", "false", "else", "elseif",
                                       "break", "do", "goto"):
        return k
    return "[%s]" % lua_value(k)


def lua_value(v):
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "{" + ", ".join(lua_value(x) for x in v) + "}"
    if isinstance(v, dict):
        return "{" + ", ".join("%s = %s" % (lua_key(k), lua_value(v[k]))
                               for k in sorted(v) if v[k] is not None) + "}"
    raise TypeError(v)


def render(service, m):
    out = ["-- pgtide AWS service model: %s (generated by tests/lib/aws_model_gen.py from" % service,
           "-- %s; only the operations pgtide uses)." % m["source"],
           "-- Do not edit by hand: rerun the generator.",
           "return {"]
    for section in ("metadata", "operations", "paginators", "shapes"):
        out.append("  %s = {" % section)
        for k in sorted(m[section]):
            out.append("    %s = %s," % (lua_key(k), lua_value(m[section][k])))
        out.append("  },")
    out.append("}")
    return "\n".join(out) + "\n"


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    check = "--check" in sys.argv
    outdir = args[0] if args else os.path.join(os.path.dirname(__file__), "..", "..",
                                               "lua", "pgtide", "aws", "model")
    status = 0
    for service in SERVICES:
        text = render(service, build(service))
        path = os.path.join(outdir, service + ".lua")
        if check:
            try:
                with open(path) as f:
                    same = f.read() == text
            except OSError:
                same = False
            print("%s - model %s is up to date with botocore" % ("ok" if same else "not ok", service))
            status |= not same
        else:
            os.makedirs(outdir, exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
    sys.exit(status)


if __name__ == "__main__":
    main()
