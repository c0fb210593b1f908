"""standin.common: what every part of the AWS stand-in shares.

The run's options (ARGS, set by dms_standin.py serve), the test key, the
log (secrets masked), moto clients, errors in AWS's shapes, calling and
forwarding to moto, the databases the endpoints name (psql), table
mappings and the XML helpers of the query protocols.
"""
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


ARGS = None
KEY_ID = os.environ.get("STANDIN_ACCESS_KEY_ID", "")
SECRET = os.environ.get("STANDIN_SECRET_ACCESS_KEY", "")
LOCK = threading.RLock()
LOG = None
SECRETS = set()


def log(fmt, *a):
    line = time.strftime("%H:%M:%S ") + (fmt % a if a else fmt)
    for s in list(SECRETS):
        if s:
            line = line.replace(s, "********")
    if LOG:
        LOG.write(line + "\n")
        LOG.flush()


def now_epoch():
    return time.time()


# ---------------------------------------------------------------------------
# Time and consistency: what a real account does slowly, or not at once
# ---------------------------------------------------------------------------

# Seconds each transition takes here (AWS takes minutes for most of them).
# STANDIN_DELAYS="instance=2,task=0.5" overrides; tests keep them short.
DELAYS = {
    "instance": 1.0,          # replication instance creating -> available
    "task": 0.5,              # task creating -> ready, starting -> running, stopping -> stopped
    "connection": 0.5,        # endpoint connection test: testing -> successful | failed
    "assessment": 1.0,        # assessment run starting -> running -> passed | warning | failed
    "stack": 0.5,             # CloudFormation stack creation
    "iam": 1.5,               # IAM role propagation (a new role is not usable by DMS before)
    "minute": 1.0,            # one minute of DMS time (heartbeatFrequency is in minutes)
    "consistency": 10.0,      # how long a new resource may answer not-found (see mark_fresh)
}
for _pair in os.environ.get("STANDIN_DELAYS", "").split(","):
    if "=" in _pair:
        _k, _v = _pair.split("=", 1)
        DELAYS[_k.strip()] = float(_v)


def delay(name):
    return DELAYS[name]


# A describe right after a create can answer not-found on a real account
# (the AWS APIs are eventually consistent: "Eventual consistency in the
# Amazon EC2 API", and the same holds for DMS, IAM, CloudFormation, Step
# Functions).  With probability STANDIN_NOT_FOUND (default 0.5; the tests
# use 1) a new resource is "fresh": the first request naming it within
# delay("consistency") seconds of its creation answers not-found, once.
NOT_FOUND_RATE = float(os.environ.get("STANDIN_NOT_FOUND", "0.5"))
FRESH = {}      # key -> (group, created); a resource's id and ARN share a group


def mark_fresh(*keys):
    import random
    keys = [k for k in keys if k]
    if not keys or random.random() >= NOT_FOUND_RATE:
        return
    group = (object(), now_epoch())
    with LOCK:
        for k in keys:
            FRESH[k] = group


def consume_fresh(keys):
    """True (once per resource) when one of 'keys' names a fresh resource."""
    with LOCK:
        for k in keys:
            group = FRESH.get(k)
            if group is not None:
                for other in [x for x, g in FRESH.items() if g is group]:
                    del FRESH[other]
                if now_epoch() - group[1] > delay("consistency"):
                    continue
                log("eventual consistency: %s not found (just created)", k)
                return True
    return False


CLIENTS = {}


def moto_client(service):
    """A boto3 client for moto itself (cached: creating one takes a while)."""
    with LOCK:
        if service not in CLIENTS:
            CLIENTS[service] = boto3.client(service, endpoint_url=ARGS.moto, region_name=ARGS.region,
                                            aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                                            config=Config(retries={"max_attempts": 2}))
        return CLIENTS[service]



class ApiError(Exception):
    """An AWS error answer.  shape "ec2" is EC2's <Response><Errors>..."""
    def __init__(self, code, message, status=400, shape=None):
        super().__init__(message)
        self.code, self.message, self.status, self.shape = code, message, status, shape


# ---------------------------------------------------------------------------
# Databases (psql)
# ---------------------------------------------------------------------------

SSLMODES = {"none": "disable", "require": "require", "verify-ca": "verify-ca", "verify-full": "verify-full"}


class Endpoint:
    def __init__(self, arn, spec):
        self.arn = arn
        self.update(spec)

    def update(self, spec):
        self.id = spec.get("EndpointIdentifier", getattr(self, "id", None))
        self.type = spec.get("EndpointType", getattr(self, "type", "source"))
        self.host = spec.get("ServerName", getattr(self, "host", None))
        self.port = int(spec.get("Port", getattr(self, "port", 5432)))
        self.db = spec.get("DatabaseName", getattr(self, "db", None))
        self.user = spec.get("Username", getattr(self, "user", None))
        if "Password" in spec:
            self.password = spec["Password"]
            SECRETS.add(self.password)
        self.ssl = spec.get("SslMode", getattr(self, "ssl", "none")) or "none"
        eca = spec.get("ExtraConnectionAttributes", None)
        if eca is not None:
            self.eca = {}
            for pair in eca.split(";"):
                if "=" in pair:
                    k, v = pair.split("=", 1)
                    self.eca[k.strip().lower()] = v.strip()
        elif not hasattr(self, "eca"):
            self.eca = {}
        pgs = spec.get("PostgreSQLSettings") or {}
        if pgs.get("SlotName"):
            self.eca["slotname"] = pgs["SlotName"]

    def conninfo(self):
        return "host=%s port=%d dbname=%s user=%s sslmode=%s connect_timeout=5" % (
            self.host, self.port, self.db, self.user, SSLMODES.get(self.ssl, "prefer"))

    def env(self):
        e = dict(os.environ)
        e["PGPASSWORD"] = getattr(self, "password", "")
        e["PGPASSFILE"] = "/dev/null"
        e["PGAPPNAME"] = "dms-standin"
        return e


def psql(ep, sql, timeout=60, stdin=None):
    """Run SQL on an endpoint's database. -> list of rows (lists of fields)."""
    cmd = ["psql", ep.conninfo(), "-X", "-A", "-t", "-q", "-0", "-v", "ON_ERROR_STOP=1"]
    if stdin is None:
        cmd += ["-c", sql]
    else:
        cmd += ["-1", "-f", "-"]
    p = subprocess.run(cmd, input=(stdin.encode() if stdin is not None else None), capture_output=True,
                       timeout=timeout, env=ep.env())
    if p.returncode != 0:
        msg = p.stderr.decode(errors="replace").strip().splitlines()
        raise DbError("; ".join(l.strip() for l in msg if l.strip()) or "psql exited with %d" % p.returncode)
    # one column per row (queries join several values with chr(31));
    # records are separated by a zero byte (-0), so values may hold newlines
    out = p.stdout.decode(errors="replace")
    if stdin is not None:
        return []
    recs = out.split("\0")
    if recs and recs[-1].strip() == "":
        recs = recs[:-1]
    return [r.split("\x1f") for r in recs]


class DbError(Exception):
    pass


def admin_psql(ep, sql, timeout=60):
    """Run SQL on an endpoint's database as the test's administrator.

    Only for what the stand-in needs and DMS does not: the publication its
    pgoutput-based data movement reads (DMS decodes with test_decoding,
    which needs none).  The conninfos come from <workdir>/admin.json
    ({"host:port": conninfo}, written by the test), their passwords from
    the test's PGPASSFILE.  Raises DbError when none is registered.
    """
    path = os.path.join(C_ARGS().workdir, "admin.json")
    conninfo = None
    if os.path.exists(path):
        with open(path) as f:
            conninfo = json.load(f).get("%s:%d" % (ep.host, ep.port))
    if not conninfo:
        raise DbError("no administrator connection registered for %s:%d (standin.lua set_admin)" % (ep.host, ep.port))
    cmd = ["psql", conninfo + " dbname=" + ep.db, "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql]
    p = subprocess.run(cmd, capture_output=True, timeout=timeout, env=dict(os.environ, PGAPPNAME="dms-standin-admin"))
    if p.returncode != 0:
        raise DbError(p.stderr.decode(errors="replace").strip())
    return p.stdout.decode(errors="replace")


def C_ARGS():
    return ARGS


def lit(s):
    return "'" + s.replace("'", "''") + "'"


def qident(name):
    if re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


# ---------------------------------------------------------------------------
# Table mappings
# ---------------------------------------------------------------------------

def like(pattern, s):
    rx = "^" + "".join(".*" if ch == "%" else re.escape(ch) for ch in pattern) + "$"
    return re.match(rx, s) is not None


def selected_tables(source, mappings):
    rules = json.loads(mappings).get("rules", [])
    rows = psql(source, """select n.nspname || chr(31) || c.relname from pg_class c join pg_namespace n
        on n.oid = c.relnamespace where c.relkind in ('r', 'p') and not c.relispartition
        and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_'
        order by 1""")
    out = []
    for r in rows:
        schema, table = r[0], r[1]
        inc = False
        for rule in rules:
            loc = rule.get("object-locator", {})
            if rule.get("rule-type") == "selection" and like(loc.get("schema-name", "%"), schema) \
                    and like(loc.get("table-name", "%"), table):
                if rule.get("rule-action") == "include":
                    inc = True
                elif rule.get("rule-action") == "exclude":
                    inc = False
                    break
        if inc:
            out.append((schema, table))
    return out


# ---------------------------------------------------------------------------

# ---------------------------------------------------------------------------
# HTTP plumbing
# ---------------------------------------------------------------------------

def forward(method, raw_path, headers, body):
    u = urllib.parse.urlsplit(ARGS.moto)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    conn.putrequest(method, raw_path, skip_host=True, skip_accept_encoding=True)
    for k, v in headers.items():
        if k.lower() in ("connection", "keep-alive", "expect", "transfer-encoding"):
            continue
        conn.putheader(k, v)
    if "Content-Length" not in headers and body:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body if body else None)
    r = conn.getresponse()
    data = r.read()
    hdrs = [(k, v) for k, v in r.getheaders() if k.lower() not in ("transfer-encoding", "connection", "content-length")]
    conn.close()
    return r.status, hdrs, data


def json_call(target, body_obj, service="dms"):
    """Call moto's JSON API ourselves (signed with the test key via boto3's signer)."""
    prefix = {"dms": "AmazonDMSv20160101"}[service]
    body = json.dumps(body_obj).encode()
    req = AWSRequest(method="POST", url=ARGS.moto + "/", data=body, headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "%s.%s" % (prefix, target)})
    SigV4Auth(Credentials(KEY_ID, SECRET), service, ARGS.region).add_auth(req)
    u = urllib.parse.urlsplit(ARGS.moto)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request("POST", "/", body, dict(req.headers.items()))
    r = conn.getresponse()
    data = json.loads(r.read() or b"{}")
    conn.close()
    if r.status >= 300:
        raise ApiError(data.get("__type", "Error"), data.get("message", ""), r.status)
    return data



def fwd_json(h, body):
    status, hdrs, data = forward(h.command, h.path, h.headers, body)
    if status >= 300:
        h._send(status, hdrs, data)
        return None
    return json.loads(data or b"{}")



ACCOUNT = "123456789012"


def xml_result(data):
    root = ET.fromstring(data)
    ns = root.tag[1:].split("}")[0] if root.tag.startswith("{") else ""
    return root, ns


def q(ns, name):
    return "{%s}%s" % (ns, name) if ns else name


def set_text(parent, ns, name, text):
    el = parent.find(q(ns, name))
    if el is None:
        el = ET.SubElement(parent, q(ns, name))
    el.text = text
    return el


def to_xml(root, ns):
    if ns:
        ET.register_namespace("", ns)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root)


def iso(t):
    if isinstance(t, datetime.datetime):
        return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return str(t)


