#!/usr/bin/env python3
"""aws_request_check.py: validate requests built by pgtide against botocore.

Usage: aws_request_check.py FILE

FILE holds one JSON object per line, written by tests/lua/test_aws_requests.lua:
  {"name": ..., "service": "dms", "operation": "CreateEndpoint",
   "params": {...}, "validate": true,
   "request": {"method": ..., "url": ..., "headers": {...}, "body": ...}}

For each line, using botocore's service-2.json model of the service:
  * when "validate" is set, the parameters must pass botocore's
    ParamValidator (required members present, types right);
  * botocore's serializer is run on the same parameters and its request
    must equal pgtide's: JSON bodies compared as JSON, query/EC2 forms as
    parameter maps, REST-XML method, path, query, headers and XML body.

Prints one JSON object per line: {"name", "ok", "detail"}.
"""
import json
import sys
import xml.etree.ElementTree as ET
from urllib.parse import parse_qsl, urlsplit, unquote

try:
    import botocore.session
    from botocore.serialize import create_serializer
    from botocore.validate import ParamValidator
except ImportError as e:
    print(json.dumps({"skip": "botocore not importable: %s" % e}))
    sys.exit(0)

SESSION = botocore.session.get_session()
MODELS = {}


def model(service):
    if service not in MODELS:
        MODELS[service] = SESSION.get_service_model(service)
    return MODELS[service]


def xml_canon(text):
    """Canonical form of an XML body: namespaces and element order kept."""
    if not text:
        return None

    def walk(e):
        return (e.tag, sorted(e.attrib.items()), (e.text or "").strip(), [walk(c) for c in e])
    return walk(ET.fromstring(text))


def botocore_protocol(svc_model):
    p = svc_model.metadata["protocol"]
    if p not in ("json", "query", "ec2", "rest-xml", "rest-json"):
        p = "json" if "json" in svc_model.metadata.get("protocols", []) else "query"
    return p


def check(case):
    svc = model(case["service"])
    op = svc.operation_model(case["operation"])
    params = case["params"]
    ours = case["request"]
    problems = []
    if case.get("validate"):
        report = ParamValidator().validate(params, op.input_shape) if op.input_shape else None
        if report is not None and report.has_errors():
            problems.append("botocore validation: " + report.generate_report())
    protocol = botocore_protocol(svc)
    try:
        ser = create_serializer(protocol, include_validation=False)
        ref = ser.serialize_to_request(params, op)
    except Exception as e:  # a serializer crash is a finding too
        return ["botocore cannot serialise these parameters: %r" % e]
    if ours["method"] != ref["method"]:
        problems.append("method %s, botocore %s" % (ours["method"], ref["method"]))
    headers = {k.lower(): v for k, v in (ours.get("headers") or {}).items()}
    if protocol == "json":
        body = ref["body"].decode() if isinstance(ref["body"], bytes) else ref["body"]
        if json.loads(ours["body"]) != json.loads(body or "{}"):
            problems.append("JSON body differs:\n  ours     %s\n  botocore %s" % (ours["body"], body))
        for h in ("x-amz-target", "content-type"):
            want = {k.lower(): v for k, v in ref["headers"].items()}.get(h)
            if headers.get(h) != want:
                problems.append("header %s: %r, botocore %r" % (h, headers.get(h), want))
    elif protocol in ("query", "ec2"):
        got = dict(parse_qsl(ours["body"], keep_blank_values=True))
        want = {k: str(v) for k, v in ref["body"].items()}
        if got != want:
            extra = sorted(set(got.items()) - set(want.items()))
            missing = sorted(set(want.items()) - set(got.items()))
            problems.append("form differs: ours only %s; botocore only %s" % (extra, missing))
        if len(ours["body"].split("&")) != len(got):
            problems.append("repeated form keys")
    elif protocol == "rest-xml":
        url = urlsplit(ours["url"])
        # pgtide uses path-style URLs in these checks: /bucket/key?query
        path, query = url.path, url.query
        want_path = ref["url_path"].split("?")[0]
        if unquote(path) != unquote(want_path) or path != want_path:
            problems.append("path %s, botocore %s" % (path, want_path))
        got_q = dict(parse_qsl(query, keep_blank_values=True))
        want_q = dict(parse_qsl(ref["url_path"].partition("?")[2], keep_blank_values=True))
        for k, v in ref["query_string"].items():
            want_q[k] = v if isinstance(v, str) else str(v)
        if got_q != want_q:
            problems.append("query %s, botocore %s" % (got_q, want_q))
        for k, v in ref["headers"].items():
            if headers.get(k.lower()) != v:
                problems.append("header %s: %r, botocore %r" % (k, headers.get(k.lower()), v))
        body = ref["body"]
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        ours_body = ours.get("body")
        if (ours_body or "").startswith("<") or (body or "").startswith("<"):
            if xml_canon(ours_body) != xml_canon(body):
                problems.append("XML body differs:\n  ours     %s\n  botocore %s" % (ours_body, body))
        elif (ours_body or "") != (body or ""):
            problems.append("body %r, botocore %r" % (ours_body, body))
    return problems


def main():
    for line in open(sys.argv[1]):
        case = json.loads(line)
        try:
            problems = check(case)
        except Exception as e:
            problems = ["checker error: %r" % e]
        print(json.dumps({"name": case["name"], "ok": not problems,
                          "detail": "\n".join(problems)}))


if __name__ == "__main__":
    main()
