#!/usr/bin/env python3
"""dms_standin.py: a minimal stand-in for the AWS behaviour moto lacks.

It listens on 127.0.0.1, checks the SigV4 signature of every request with
botocore against the test key, answers exactly the operations listed
below itself, and forwards everything else, byte for byte (Host header
included, so moto's own signature check passes too), to moto_server.

DMS (moto has the resources but no behaviour):
  TestConnection / DescribeConnections   a real connection attempt (psql) from
                                          the "replication instance" to the
                                          endpoint's database, with the
                                          endpoint's credentials and SSL mode:
                                          testing -> successful | failed
                                          (LastFailureMessage = libpq's error)
  CreateEndpoint / DeleteEndpoint         forwarded; the stand-in also keeps
                                          the connection details (in memory)
  ModifyEndpoint                          updates those details
  CreateReplicationTask                   forwarded; then creating -> ready
  StartReplicationTask                    forwarded; then starting -> running,
                                          and the data movement DMS would do,
                                          by pgtide's own engine
                                          (tests/lib/dms_mover.lua via `pgtide
                                          script`): checks the source slot
                                          named by the endpoint's slotName
                                          exists; creates a pgoutput slot and a
                                          publication for the tables the table
                                          mappings select (both named after the
                                          task), full-loads them with core.load
                                          under the slot's exported snapshot,
                                          then streams with core.cdc until the
                                          task is stopped (the endpoint's slot
                                          is advanced as DMS would consume it).
                                          A failed load sets the task to failed
                                          with the error as LastFailureMessage.
                                          start-replication / reload-target
                                          (fresh slot and load) and
                                          resume-processing (stream from the
                                          slot) are honoured.
  StopReplicationTask                     running -> stopping -> stopped
  DescribeReplicationTasks                moto's answer with Status, StopReason,
                                          LastFailureMessage, start date and
                                          ReplicationTaskStats from the above
  DescribeTableStatistics                 per table: state, full-load rows, CDC
                                          counts, validation state (exact
                                          source/target row counts)
  StartReplicationTaskAssessmentRun,      a run that goes starting -> running ->
  DescribeReplicationTaskAssessmentRuns   passed
  DeleteReplicationTask                   drops the mover's slot, publication
                                          and progress on the target; forwarded
CloudWatch: while CDC runs, CDCLatencySource and CDCLatencyTarget (the
mover's lag in seconds) are put
into moto (PutMetricData, namespace AWS/DMS, dimensions
ReplicationInstanceIdentifier + ReplicationTaskIdentifier = the task ARN's
last part), so GetMetricData/ListMetrics answered by moto return them.
CloudFormation (moto skips AWS::DMS::* resources): after CreateStack the
template's DMS resources are created through moto's DMS API with their
properties resolved (Ref, Fn::Sub, Fn::GetAtt, Fn::If, Fn::Join), and
DescribeStacks/ListStackResources/DescribeStackResources show their
physical ids and the outputs that refer to them; DeleteStack deletes them.
Step Functions (moto does not run state machines): StartExecution runs
the state machine definition with a small interpreter (Task aws-sdk
databasemigration/ec2/sns and sns:publish, Wait, Choice, Pass, Parallel,
Succeed, Fail, Retry, Catch) whose service calls go through this
stand-in; DescribeExecution / GetExecutionHistory report it.

The parts, one module per service, are in tests/lib/standin/: common.py
(options, log, moto calls, databases), dms.py, cfn.py (CloudFormation and
SNS), sfn.py (Step Functions).  This file checks signatures, routes
requests and starts/stops everything.

Usage: dms_standin.py --port N --moto http://127.0.0.1:M [--region R]
                      [--pgtide PATH] [--workdir DIR]
The test key comes from the environment: STANDIN_ACCESS_KEY_ID and
STANDIN_SECRET_ACCESS_KEY.  Prints "ready" on stdout once listening.
Secrets are never logged.
"""
import argparse
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


from standin import common as C
from standin.common import KEY_ID, SECRET, ApiError, forward, log, moto_client
from standin import cfn, dms, ec2, iam, sfn

# ---------------------------------------------------------------------------
# SigV4 check
# ---------------------------------------------------------------------------

AUTH_RE = re.compile(r"AWS4-HMAC-SHA256\s+Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request,\s*"
                     r"SignedHeaders=([^,\s]+),\s*Signature=([0-9a-f]{64})")


def check_signature(method, raw_path, headers, body):
    """-> (service, region) or raises SigError(code, message)."""
    auth = headers.get("Authorization")
    if not auth:
        raise SigError("MissingAuthenticationToken", "Request is missing Authentication Token")
    m = AUTH_RE.match(auth)
    if not m:
        raise SigError("IncompleteSignature", "Authorization header is malformed")
    akid, date, region, service, signed, sig = m.groups()
    if akid != KEY_ID:
        raise SigError("InvalidClientTokenId", "The security token included in the request is invalid.")
    amz_date = headers.get("X-Amz-Date")
    if not amz_date or not amz_date.startswith(date):
        raise SigError("IncompleteSignature", "X-Amz-Date missing or not matching the credential scope")
    t = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    if abs((datetime.datetime.now(datetime.timezone.utc) - t).total_seconds()) > 900:
        raise SigError("SignatureDoesNotMatch", "Signature expired: the request time is too skewed")
    hdrs = {}
    for name in signed.split(";"):
        vals = headers.get_all(name)
        if vals is None:
            raise SigError("SignatureDoesNotMatch", "signed header %s is missing" % name)
        hdrs[name] = ",".join(vals)
    sha = headers.get("X-Amz-Content-SHA256")
    if sha and re.fullmatch(r"[0-9a-f]{64}", sha) and sha != hashlib.sha256(body).hexdigest():
        raise SigError("XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not match")
    req = AWSRequest(method=method, url="http://" + headers["Host"] + raw_path, data=body, headers=hdrs)
    req.context["timestamp"] = amz_date
    cls = S3SigV4Auth if service == "s3" else SigV4Auth
    a = cls(Credentials(KEY_ID, SECRET), service, region)
    cr = a.canonical_request(req)
    expect = a.signature(a.string_to_sign(req, cr), req)
    if expect != sig:
        raise SigError("SignatureDoesNotMatch", "The request signature we calculated does not match the "
                       "signature you provided. Check your AWS Secret Access Key and signing method.")
    return service, region


class SigError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message



class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def _send(self, status, headers, body):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status=200):
        body = json.dumps(obj, default=str).encode()
        self._send(status, [("Content-Type", "application/x-amz-json-1.1"),
                            ("x-amzn-RequestId", str(uuid.uuid4()))], body)

    def _json_error(self, code, msg, status=400):
        self._json({"__type": code, "message": msg}, status)

    def _xml_error(self, code, msg, status=400, shape=None):
        text = msg.replace("&", "&amp;").replace("<", "&lt;")
        if shape == "ec2":
            body = ("<Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error></Errors>"
                    "<RequestID>%s</RequestID></Response>" % (code, text, uuid.uuid4())).encode()
        else:
            body = ("<ErrorResponse><Error><Type>Sender</Type><Code>%s</Code><Message>%s</Message></Error>"
                    "<RequestId>%s</RequestId></ErrorResponse>" % (code, text, uuid.uuid4())).encode()
        self._send(status, [("Content-Type", "text/xml")], body)

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            service, region = check_signature(self.command, self.path, self.headers, body)
        except SigError as e:
            log("%s %s rejected: %s", self.command, self.path, e.code)
            target = self.headers.get("X-Amz-Target", "")
            if target or "json" in (self.headers.get("Content-Type") or ""):
                return self._json_error(e.code, e.message, 403)
            return self._xml_error(e.code, e.message, 403)
        try:
            handled = route(self, service, body)
        except ApiError as e:
            log("%s error %s: %s", service, e.code, e.message)
            if self.headers.get("X-Amz-Target"):
                return self._json_error(e.code, e.message, e.status)
            return self._xml_error(e.code, e.message, e.status, e.shape)
        except Exception as e:  # noqa: BLE001
            log("internal error: %s", traceback.format_exc())
            return self._json_error("InternalFailure", str(e), 500)
        if handled is None:
            status, hdrs, data = forward(self.command, self.path, self.headers, body)
            self._send(status, hdrs, data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any


def route(h, service, body):
    target = h.headers.get("X-Amz-Target", "")
    if service == "dms" and target.startswith("AmazonDMSv20160101."):
        return dms.dms_route(h, target.split(".", 1)[1], body)
    if service == "cloudformation":
        return cfn.CFN.route(h, body)
    if service == "states" and target.startswith("AWSStepFunctions."):
        return sfn.SFN.route(h, target.split(".", 1)[1], body)
    if service == "sns":
        return cfn.sns_route(h, body)
    if service == "ec2":
        return ec2.route(h, body)
    if service == "iam":
        return iam.route(h, body)
    return None





def serve(argv):
    ap = argparse.ArgumentParser(prog="dms_standin.py serve")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--moto", required=True)
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--pgtide", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "pgtide"))
    ap.add_argument("--workdir", default="/tmp")
    C.ARGS = ARGS = ap.parse_args(argv)
    if not KEY_ID or not SECRET:
        print("STANDIN_ACCESS_KEY_ID and STANDIN_SECRET_ACCESS_KEY must be set", file=sys.stderr)
        return 2
    C.SECRETS.add(SECRET)
    os.makedirs(ARGS.workdir, exist_ok=True)
    C.LOG = open(os.path.join(ARGS.workdir, "dms_standin.log"), "a")
    srv = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    srv.daemon_threads = True
    moto_client("cloudwatch")
    print("ready", flush=True)
    log("listening on %d, forwarding to %s", ARGS.port, ARGS.moto)
    srv.serve_forever()
    return 0


def read_credentials(path):
    out = {}
    with open(path) as f:
        for line in f:
            if "=" in line:
                k, v = line.split("=", 1)
                out[k.strip()] = v.strip()
    return out["aws_access_key_id"], out["aws_secret_access_key"]


def up(argv):
    """up DIR [--pgtide PATH]: moto (tests/lib/moto.sh) + this stand-in in front of it."""
    ap = argparse.ArgumentParser(prog="dms_standin.py up")
    ap.add_argument("dir")
    ap.add_argument("--pgtide", default=None)
    ap.add_argument("--region", default="us-east-1")
    a = ap.parse_args(argv)
    here = os.path.dirname(os.path.abspath(__file__))
    os.makedirs(a.dir, exist_ok=True)
    moto_dir = os.path.join(a.dir, "moto")
    p = subprocess.run([os.path.join(here, "moto.sh"), "start", moto_dir], capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        return p.returncode
    with open(os.path.join(moto_dir, "endpoint")) as f:
        moto = f.read().strip()
    key, secret = read_credentials(os.path.join(moto_dir, "credentials"))
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    env = dict(os.environ, STANDIN_ACCESS_KEY_ID=key, STANDIN_SECRET_ACCESS_KEY=secret)
    cmd = [sys.executable, os.path.abspath(__file__), "serve", "--port", str(port), "--moto", moto,
           "--region", a.region, "--workdir", os.path.join(a.dir, "standin")]
    if a.pgtide:
        cmd += ["--pgtide", a.pgtide]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(os.path.join(a.dir, "standin.err"), "w"),
                            env=env, start_new_session=True)
    line = proc.stdout.readline().decode().strip()
    if line != "ready":
        sys.stderr.write("stand-in did not start; see %s/standin.err\n" % a.dir)
        subprocess.run([os.path.join(here, "moto.sh"), "stop", moto_dir])
        return 1
    with open(os.path.join(a.dir, "standin.pid"), "w") as f:
        f.write(str(proc.pid))
    print("endpoint=http://127.0.0.1:%d moto=%s credentials=%s" % (port, moto, os.path.join(moto_dir, "credentials")))
    return 0


def down(argv):
    """down DIR: stop the stand-in and moto started by 'up DIR'."""
    d = argv[0]
    here = os.path.dirname(os.path.abspath(__file__))
    pidfile = os.path.join(d, "standin.pid")
    if os.path.exists(pidfile):
        with open(pidfile) as f:
            pid = int(f.read().strip())
        try:
            os.kill(pid, 15)
            for _ in range(50):
                os.kill(pid, 0)
                time.sleep(0.1)
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.unlink(pidfile)
    subprocess.run([os.path.join(here, "moto.sh"), "stop", os.path.join(d, "moto")])
    return 0


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("serve", "up", "down"):
        print(__doc__)
        print("commands: up DIR [--pgtide PATH] | down DIR | serve --port N --moto URL [...]")
        return 2
    return {"serve": serve, "up": up, "down": down}[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
