#!/usr/bin/env python3
"""sigv4_oracle.py: random SigV4 cases signed by botocore (the oracle).

Usage: sigv4_oracle.py [--count N] [--seed S]

Prints one JSON object per line: the request as sent on the wire (method,
url, headers in order with duplicates, body in base64, credentials, time,
presign/expires, s3) and botocore's results (canonical_request,
string_to_sign, signature, the headers it added, the presigned url).  The
test programs (tests/unit/test_sigv4_botocore.c, tests/lua/test_aws_sign.lua)
sign the same request with pgtide's signer and compare.

The keys generated here are random throwaway strings, not test secrets.
"""
import argparse
import base64
import datetime
import json
import random
import string
import sys
from unittest import mock
from urllib.parse import quote

try:
    from botocore.auth import (S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth,
                               SigV4QueryAuth)
    from botocore.awsrequest import AWSRequest
    from botocore.config import Config
    from botocore.credentials import Credentials
except ImportError as e:  # reported as a skip by the callers
    print(json.dumps({"skip": "botocore not importable: %s" % e}))
    sys.exit(0)

SEGMENTS = ["a", "b", "key", "obj a.txt", "café", "ሴ", "日本語", ".", "..", "",
            "x+y", "100%", "~user", "k=v", "(paren)", "semi;colon", "a&b",
            "dots...", "-_.~", "UPPER", "sp  ace", "quote'", "star*", "at@",
            "comma,", "colon:", "$dollar", "!bang", "#hash", "?q"]
QNAMES = ["Action", "Version", "a", "A", "b", "max-keys", "prefix", "versions",
          "delete", "ሴ", "key marker", "x/y", "p=q", "Param-3", "Param",
          "list-type", "encoding-type", "~t", "_u", "z.z"]
QVALUES = ["", "1", "Value1", "a b", "a+b", "café", "x/y/z", "=", "&", ";",
           "%", "~", "2015-08-30T12:36:00Z", "ሴ", "with  two", "*", "'q'",
           "arn:aws:dms:us-east-1:123456789012:task:ABC"]
HNAMES = ["X-Amz-Target", "Content-Type", "x-amz-meta-Foo", "My-Header",
          "X-Custom", "x-amz-acl", "Content-MD5", "Accept", "If-Match",
          "X-Amz-Sdk-Checksum-Algorithm", "Cache-Control", "Range"]
UNSIGNED = ["User-Agent", "Expect", "X-Amzn-Trace-Id", "Connection",
            "Transfer-Encoding"]
HOSTS = [("https", "example.amazonaws.com"), ("https", "dms.us-east-1.amazonaws.com"),
         ("http", "127.0.0.1:5055"), ("http", "localhost:8080"),
         ("https", "bucket.s3.eu-west-1.amazonaws.com"), ("http", "[::1]:9000"),
         ("https", "s3.amazonaws.com:443"), ("http", "EXAMPLE.com:80"),
         ("https", "Mixed.Case.Host:8443")]
SERVICES = ["dms", "states", "sts", "iam", "ec2", "cloudformation", "sns",
            "monitoring", "execute-api", "service"]
REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-2", "cn-north-1", "us-gov-west-1"]


def rand_str(rng, n, alphabet=string.ascii_letters + string.digits):
    return "".join(rng.choice(alphabet) for _ in range(n))


def rand_value(rng):
    words = ["text/plain", "application/x-amz-json-1.1", "a", "b c", "dms.Op",
             "\"quoted   value\"", "0", "x" * rng.randint(1, 40), "multi\tword"]
    v = rng.choice(words)
    # extra spaces and tabs around and inside
    if rng.random() < 0.4:
        v = " " * rng.randint(1, 3) + v
    if rng.random() < 0.4:
        v = v + rng.choice([" ", "  ", "\t", " \t "])
    if rng.random() < 0.3:
        v = v.replace(" ", "   ")
    return v


def make_case(rng, i):
    s3 = rng.random() < 0.35
    presign = rng.random() < 0.3
    scheme, host = rng.choice(HOSTS)
    segs = [rng.choice(SEGMENTS) for _ in range(rng.randint(0, 5))]
    path = "/" + "/".join(quote(s, safe="~") for s in segs)
    if rng.random() < 0.2:
        path += "/"
    if rng.random() < 0.1:
        path = "/" + path          # leading double slash
    pairs = []
    names = list(QNAMES)
    rng.shuffle(names)
    for k in range(rng.randint(0, 6)):
        name = names[k] if presign else rng.choice(QNAMES)   # presign: unique names
        if rng.random() < 0.15 and not presign:
            pairs.append(quote(name, safe="-_.~"))            # no '='
        else:
            pairs.append(quote(name, safe="-_.~") + "=" +
                         quote(rng.choice(QVALUES), safe="-_.~"))
    url = "%s://%s%s" % (scheme, host, path)
    if pairs:
        url += "?" + "&".join(pairs)
    headers = []
    for _ in range(rng.randint(0, 6)):
        name = rng.choice(HNAMES + UNSIGNED)
        if rng.random() < 0.3:
            name = name.upper() if rng.random() < 0.5 else name.lower()
        headers.append([name, rand_value(rng)])
    if headers and rng.random() < 0.3:       # duplicate with another case
        n0 = headers[rng.randrange(len(headers))][0]
        headers.append([n0.swapcase(), rand_value(rng)])
    if rng.random() < 0.15:
        h = host.lower()
        if h.endswith(":443") and scheme == "https" or h.endswith(":80") and scheme == "http":
            h = h.rsplit(":", 1)[0]
        headers.insert(rng.randrange(len(headers) + 1), ["Host", h])
    body = b""
    if not presign and rng.random() < 0.6:   # presigned URLs carry no body
        kind = rng.random()
        if kind < 0.3:
            body = json.dumps({"Name": rand_str(rng, 12), "n": rng.randint(0, 99)}).encode()
        elif kind < 0.6:
            body = ("Action=GetCallerIdentity&Version=2011-06-15&X=" + rand_str(rng, 8)).encode()
        else:
            body = bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))
    unsigned_payload = False
    if rng.random() < 0.1:
        headers.append(["X-Amz-Content-SHA256", "UNSIGNED-PAYLOAD"])
        unsigned_payload = True
    token = None
    if rng.random() < 0.4:
        token = rand_str(rng, rng.randint(20, 300), string.ascii_letters + string.digits + "+/=")
    case = {
        "id": i,
        "method": rng.choice(["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "get"]),
        "url": url,
        "headers": headers,
        "body_b64": base64.b64encode(body).decode(),
        "service": "s3" if s3 else rng.choice(SERVICES),
        "region": rng.choice(REGIONS),
        "access_key_id": rng.choice(["AKIA", "ASIA"]) + rand_str(rng, 16, string.ascii_uppercase + string.digits),
        "secret_access_key": rand_str(rng, 40, string.ascii_letters + string.digits + "+/"),
        "session_token": token,
        "time": rng.randint(1262304000, 2082758400),
        "presign": presign,
        "expires": rng.randint(1, 604800) if presign else None,
        "s3": s3,
    }
    return case, body, unsigned_payload


def sign(case, body, unsigned_payload):
    creds = Credentials(case["access_key_id"], case["secret_access_key"], case["session_token"])
    if case["presign"]:
        base = S3SigV4QueryAuth if case["s3"] else SigV4QueryAuth
    else:
        base = S3SigV4Auth if case["s3"] else SigV4Auth

    class Capture(base):
        def string_to_sign(self, request, canonical_request):
            self.cr = canonical_request
            self.sts = super().string_to_sign(request, canonical_request)
            return self.sts

    if case["presign"]:
        auth = Capture(creds, case["service"], case["region"], expires=case["expires"])
    else:
        auth = Capture(creds, case["service"], case["region"])
    req = AWSRequest(method=case["method"], url=case["url"], data=body)
    for name, value in case["headers"]:
        req.headers[name] = value          # appends: duplicates are kept
    if unsigned_payload and case["s3"]:
        req.context["client_config"] = Config(s3={"payload_signing_enabled": False})
    when = datetime.datetime.fromtimestamp(case["time"], datetime.timezone.utc).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        auth.add_auth(req)
    out = {"canonical_request": auth.cr, "string_to_sign": auth.sts}
    if case["presign"]:
        out["url"] = req.url
        out["signature"] = req.url.rsplit("X-Amz-Signature=", 1)[1]
    else:
        out["authorization"] = req.headers["Authorization"]
        out["signature"] = req.headers["Authorization"].rsplit("Signature=", 1)[1]
        out["x_amz_date"] = req.headers["X-Amz-Date"]
        out["content_sha256"] = req.headers.get("X-Amz-Content-SHA256")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    rng = random.Random(seed)
    print(json.dumps({"seed": seed}))
    for i in range(args.count):
        case, body, unsigned_payload = make_case(rng, i)
        case["expect"] = sign(case, body, unsigned_payload)
        print(json.dumps(case))


if __name__ == "__main__":
    main()
