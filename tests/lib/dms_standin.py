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


CLIENTS = {}


def moto_client(service):
    """A boto3 client for moto itself (cached: creating one takes a while)."""
    with LOCK:
        if service not in CLIENTS:
            CLIENTS[service] = boto3.client(service, endpoint_url=ARGS.moto, region_name=ARGS.region,
                                            aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                                            config=Config(retries={"max_attempts": 2}))
        return CLIENTS[service]


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


class ApiError(Exception):
    def __init__(self, code, message, status=400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


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
# DMS emulation
# ---------------------------------------------------------------------------

ENDPOINTS = {}      # arn -> Endpoint
CONNECTIONS = {}    # (instance arn, endpoint arn) -> {"Status", "LastFailureMessage"}
TASKS = {}          # arn -> Task
ASSESSMENTS = {}    # arn -> dict
INSTANCES = {}      # arn -> identifier


def network_blocks(inst_arn, ep):
    """Security groups gate connectivity (moto does not model the network).

    When <workdir>/network.json names {"source_security_group": "sg-..."},
    the replication instance reaches a SOURCE endpoint only if that
    security group has an ingress rule admitting one of the instance's
    security groups on the endpoint's port.  -> reason or None.
    """
    path = os.path.join(ARGS.workdir, "network.json")
    if ep is None or ep.type != "source" or not os.path.exists(path):
        return None
    with open(path) as f:
        sg = json.load(f).get("source_security_group")
    if not sg:
        return None
    inst = json_call("DescribeReplicationInstances", {"Filters": [
        {"Name": "replication-instance-arn", "Values": [inst_arn]}]}).get("ReplicationInstances") or []
    groups = {g["VpcSecurityGroupId"] for i in inst for g in i.get("VpcSecurityGroups") or []}
    perms = moto_client("ec2").describe_security_groups(GroupIds=[sg])["SecurityGroups"][0].get("IpPermissions", [])
    for p in perms:
        lo, hi = p.get("FromPort", 0), p.get("ToPort", 65535)
        if p.get("IpProtocol") in ("-1", "tcp") and (p.get("IpProtocol") == "-1" or lo <= ep.port <= hi):
            if any(pair.get("GroupId") in groups for pair in p.get("UserIdGroupPairs", [])):
                return None
    return ("connection to server at \"%s\", port %d failed: Connection timed out (security group %s does not "
            "admit the replication instance's security groups %s)" % (ep.host, ep.port, sg, sorted(groups)))


def test_connection(inst_arn, ep_arn):
    key = (inst_arn, ep_arn)
    with LOCK:
        old = CONNECTIONS.get(key, {})
        CONNECTIONS[key] = dict(old, Status="testing", LastFailureMessage="")
    ep = ENDPOINTS.get(ep_arn)

    def run():
        time.sleep(0.3)
        status, msg = "successful", ""
        try:
            if ep is None:
                raise DbError("endpoint not known to the stand-in")
            blocked = network_blocks(inst_arn, ep)
            if blocked:
                raise DbError(blocked)
            psql(ep, "select 1", timeout=15)
        except (DbError, subprocess.TimeoutExpired) as e:
            status, msg = "failed", str(e)
        with LOCK:
            CONNECTIONS[key] = dict(CONNECTIONS.get(key, {}), Status=status, LastFailureMessage=msg)
        log("connection test %s: %s %s", ep.id if ep else ep_arn, status, msg)

    threading.Thread(target=run, daemon=True).start()


def connection_view(key):
    with LOCK:
        c = CONNECTIONS[key]
        return {"ReplicationInstanceArn": key[0], "EndpointArn": key[1], "Status": c["Status"],
                "LastFailureMessage": c.get("LastFailureMessage", ""),
                "EndpointIdentifier": c.get("EndpointIdentifier", ""),
                "ReplicationInstanceIdentifier": c.get("ReplicationInstanceIdentifier", "")}


class Task:
    def __init__(self, arn, spec, resp):
        self.arn = arn
        self.id = spec["ReplicationTaskIdentifier"]
        self.instance_arn = spec["ReplicationInstanceArn"]
        self.src_arn = spec["SourceEndpointArn"]
        self.tgt_arn = spec["TargetEndpointArn"]
        self.migration_type = spec.get("MigrationType", "full-load-and-cdc")
        self.mappings = spec.get("TableMappings", '{"rules":[]}')
        self.settings = spec.get("ReplicationTaskSettings", "{}")
        self.status = "creating"
        self.created = now_epoch()
        self.start_date = None
        self.full_load_start = None
        self.full_load_finish = None
        self.stop_date = None
        self.stop_reason = None
        self.failure = None
        self.tables = {}
        self.thread = None
        self.stop_event = threading.Event()
        self.full_load_done = False
        self.cdc_metrics = []

    # -- view --------------------------------------------------------------
    def overlay(self, d):
        with LOCK:
            if self.status == "creating" and now_epoch() - self.created > 0.5:
                self.status = "ready"
            d["Status"] = self.status
            if self.failure:
                d["LastFailureMessage"] = self.failure
            else:
                d.pop("LastFailureMessage", None)
            if self.stop_reason:
                d["StopReason"] = self.stop_reason
            else:
                d.pop("StopReason", None)
            if self.start_date:
                d["ReplicationTaskStartDate"] = self.start_date
            else:
                d.pop("ReplicationTaskStartDate", None)
            total = len(self.tables)
            done = sum(1 for t in self.tables.values() if t["TableState"] == "Table completed")
            loading = sum(1 for t in self.tables.values() if t["TableState"] in ("Full load", "Table is being reloaded"))
            errored = sum(1 for t in self.tables.values() if t["TableState"] == "Table error")
            stats = {
                "FullLoadProgressPercent": int(100 * done / total) if total else (100 if self.full_load_done else 0),
                "ElapsedTimeMillis": int((now_epoch() - self.start_date) * 1000) if self.start_date else 0,
                "TablesLoaded": done, "TablesLoading": loading,
                "TablesQueued": total - done - loading - errored, "TablesErrored": errored,
            }
            if self.start_date:
                stats["StartDate"] = self.start_date
                stats["FreshStartDate"] = self.start_date
            if self.full_load_start:
                stats["FullLoadStartDate"] = self.full_load_start
            if self.full_load_finish:
                stats["FullLoadFinishDate"] = self.full_load_finish
            if self.stop_date:
                stats["StopDate"] = self.stop_date
            d["ReplicationTaskStats"] = stats
        return d

    def table_stats(self):
        with LOCK:
            return [dict(v) for v in self.tables.values()]

    # -- lifecycle ---------------------------------------------------------
    def start(self, kind):
        with LOCK:
            if self.status == "creating":
                raise ApiError("InvalidResourceStateFault", "Replication task is being created")
            if self.status in ("running", "starting", "stopping"):
                raise ApiError("InvalidResourceStateFault", "Replication task is %s" % self.status)
            if kind == "start-replication" and self.start_date is not None and self.status == "ready":
                pass
            self.status = "starting"
            if kind in ("start-replication", "reload-target") or not self.full_load_done:
                for v in self.tables.values():   # a (re)load starts every table over
                    v.update(TableState="Before load", FullLoadRows=0, ValidationState="Pending records")
            self.failure = None
            self.stop_reason = None
            self.stop_date = None
            self.start_date = self.start_date or now_epoch()
            self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, args=(kind,), daemon=True)
        self.thread.start()

    def stop(self):
        with LOCK:
            if self.status not in ("running", "starting"):
                raise ApiError("InvalidResourceStateFault", "Replication task is not running")
            self.status = "stopping"
        self.stop_event.set()

        def finish():
            if self.thread:
                self.thread.join(30)
            with LOCK:
                self.status = "stopped"
                self.stop_reason = "Stop Reason NORMAL"
                self.stop_date = now_epoch()
        threading.Thread(target=finish, daemon=True).start()

    def fail(self, msg, table=None):
        log("task %s failed: %s", self.id, msg)
        with LOCK:
            self.status = "failed"
            self.failure = msg
            self.stop_reason = "Stop Reason FATAL_ERROR"
            self.stop_date = now_epoch()
            if table and table in self.tables:
                self.tables[table]["TableState"] = "Table error"

    def run(self, kind):
        try:
            self._run(kind)
        except Exception as e:   # noqa: BLE001 - every failure becomes the task's
            log("task %s: %s", self.id, traceback.format_exc())
            self.fail(str(e))

    def _run(self, kind):
        src, tgt = ENDPOINTS.get(self.src_arn), ENDPOINTS.get(self.tgt_arn)
        if src is None or tgt is None:
            raise DbError("an endpoint of the task is not known to the stand-in")
        time.sleep(0.3)
        slot = src.eca.get("slotname")
        if slot:
            rows = psql(src, "select plugin from pg_replication_slots where slot_name = %s" % lit(slot))
            if not rows:
                raise DbError("Replication slot '%s' does not exist on the source (slotName)" % slot)
        names = selected_tables(src, self.mappings)
        if not names:
            raise DbError("No tables were found at task initialization (FailOnNoTablesCaptured)")
        with LOCK:
            self.status = "running"
            if kind in ("start-replication", "reload-target") or not self.full_load_done:
                self.tables = {}
                for s, t in names:
                    self.tables["%s.%s" % (s, t)] = {
                        "SchemaName": s, "TableName": t, "TableState": "Before load", "FullLoadRows": 0,
                        "Inserts": 0, "Updates": 0, "Deletes": 0, "Ddls": 0, "AppliedInserts": 0,
                        "AppliedUpdates": 0, "AppliedDeletes": 0, "AppliedDdls": 0,
                        "ValidationState": "Pending records", "ValidationPendingRecords": 0,
                        "ValidationFailedRecords": 0, "ValidationSuspendedRecords": 0,
                        "LastUpdateTime": now_epoch(),
                    }
        reload = kind in ("start-replication", "reload-target") or not self.full_load_done
        if "cdc" not in self.migration_type:
            mode = "loadonly" if reload else None
        else:
            mode = "load" if reload else "resume"
        if mode:
            self.move(src, tgt, names, mode, slot)
            if self.status == "failed":
                return
        if "cdc" not in self.migration_type:
            self.validate(src, tgt)
            with LOCK:
                self.status = "stopped"
                self.stop_reason = "Stop Reason FULL_LOAD_ONLY_FINISHED"
                self.stop_date = now_epoch()

    # -- data movement: tests/lib/dms_mover.lua ---------------------------
    def mover_name(self):
        """Slot and publication of this task's mover (derived from the task, so deletion finds them)."""
        base = "standin_" + re.sub(r"[^a-z0-9_]", "_", self.id.lower())
        return base[:54] + "_" + hashlib.sha1(self.arn.encode()).hexdigest()[:8]

    def mover_dir(self):
        d = os.path.join(ARGS.workdir, "mover-" + self.mover_name())
        os.makedirs(d, exist_ok=True)
        return d

    def run_mover(self, src, tgt, mode, tables, dms_slot=""):
        """Start dms_mover.lua with the endpoints' passwords in a pgpass file (removed by the caller)."""
        d = self.mover_dir()
        pgpass = os.path.join(d, "pgpass")
        fd = os.open(pgpass, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            for ep in (src, tgt):
                f.write("%s:%d:%s:%s:%s\n" % (ep.host, ep.port, ep.db, ep.user,
                                              getattr(ep, "password", "").replace("\\", "\\\\").replace(":", "\\:")))
        env = dict(os.environ)
        env["PGPASSFILE"] = pgpass
        env.pop("PGPASSWORD", None)
        try:
            os.unlink(os.path.join(d, "stop"))
        except FileNotFoundError:
            pass
        errf = open(os.path.join(d, "mover.err"), "w+b")
        args = [ARGS.pgtide, "script", MOVER, mode, src.conninfo(), tgt.conninfo(), json.dumps(tables),
                self.mover_name(), d, str(os.getpid()), dms_slot or ""]
        p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=errf, stdin=subprocess.DEVNULL, env=env)
        return p, errf, pgpass

    @staticmethod
    def mover_error(errf, rc):
        errf.seek(0)
        err = errf.read().decode(errors="replace")
        lines = [l.strip() for l in err.strip().splitlines()
                 if l.strip() and not re.match(r"^\d\d:\d\d:\d\d\.\d+Z (INFO|DEBUG|TRACE|WARN)", l.strip())
                 and not l.startswith("\t") and "stack traceback" not in l]
        return " ".join(lines[:2]) or "the mover exited with %d" % rc

    def drop_movement(self):
        """Drop the mover's slot, publication and progress on the target (task deletion)."""
        src, tgt = ENDPOINTS.get(self.src_arn), ENDPOINTS.get(self.tgt_arn)
        if src is None or tgt is None or "cdc" not in self.migration_type:
            return
        p, errf, pgpass = self.run_mover(src, tgt, "drop", [])
        try:
            p.communicate(timeout=60)
            if p.returncode != 0:
                log("task %s: dropping %s failed: %s", self.id, self.mover_name(), self.mover_error(errf, p.returncode))
            else:
                log("task %s: dropped slot and publication %s", self.id, self.mover_name())
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        finally:
            errf.close()
            os.unlink(pgpass)

    def move(self, src, tgt, names, mode, dms_slot):
        """Run the mover: full load (unless resuming), then CDC until the task is stopped."""
        tables = ["%s.%s" % n for n in names]
        if mode != "resume":
            with LOCK:
                self.full_load_start = now_epoch()
                for v in self.tables.values():
                    v["TableState"] = "Full load"
                    v["FullLoadStartTime"] = now_epoch()
        with LOCK:   # CDC counters of this run add to those of earlier runs
            base = {k: (v["Inserts"], v["Updates"], v["Deletes"]) for k, v in self.tables.items()}
        p, errf, pgpass = self.run_mover(src, tgt, mode, tables, dms_slot)
        phase = {"v": "load" if mode != "resume" else "cdc", "stop": False}
        stopfile = os.path.join(self.mover_dir(), "stop")

        def watch():
            # stop: the mover finishes the group in flight and exits; a load is interrupted
            while p.poll() is None:
                if self.stop_event.wait(0.2):
                    phase["stop"] = True
                    open(stopfile, "w").close()
                    if phase["v"] == "load":
                        p.terminate()
                    try:
                        p.wait(20)
                    except subprocess.TimeoutExpired:
                        p.kill()
                    return
        threading.Thread(target=watch, daemon=True).start()
        statuses, last_validate = 0, 0.0
        try:
            for line in p.stdout:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if ev.get("table") and ev.get("done"):
                    with LOCK:
                        st = self.tables.get(ev["table"])
                        if st is not None:
                            st["TableState"] = "Table completed"
                            st["FullLoadRows"] = ev.get("rows", 0)
                            st["FullLoadEndTime"] = now_epoch()
                            st["LastUpdateTime"] = now_epoch()
                elif ev.get("event") == "loaded":
                    with LOCK:
                        for v in self.tables.values():
                            v["TableState"] = "Table completed"
                        self.full_load_finish = now_epoch()
                        self.full_load_done = True
                    log("task %s: full load finished (%d tables)", self.id, len(names))
                    if mode != "loadonly":
                        self.validate(src, tgt)
                elif ev.get("event") == "streaming":
                    phase["v"] = "cdc"
                    log("task %s: CDC streaming (slot %s)", self.id, self.mover_name())
                elif ev.get("event") == "status":
                    self.cdc_status(ev, base)
                    statuses += 1
                    if statuses > 1:   # the backlog cached during the full load: DMS reports CDC metrics after it
                        lat = float(ev.get("seconds") or 0)
                        behind = (ev.get("received_lsn") or "") != (ev.get("source_lsn") or "") and (ev.get("bytes") or 0) > 0
                        self.put_latency(lat if behind else 0.0, lat)
                    if now_epoch() - last_validate > 2:
                        self.validate(src, tgt)
                        last_validate = now_epoch()
            rc = p.wait()
        finally:
            p.stdout.close()
            msg = self.mover_error(errf, p.returncode) if p.poll() not in (None, 0) else ""
            errf.close()
            os.unlink(pgpass)
        if rc == 0 or phase["stop"]:
            return
        if phase["v"] == "load":
            bad = None
            for k in self.tables:
                if k in msg or k.split(".")[1] in msg:
                    bad = k
            with LOCK:
                for k, v in self.tables.items():
                    if v["TableState"] != "Table completed":
                        v["TableState"] = "Table error" if (bad is None or k == bad) else "Table cancelled"
            self.fail("Last Error Table data load failed: %s Stop Reason FATAL_ERROR" % msg, bad)
        else:
            self.fail("Last Error CDC apply failed: %s Stop Reason FATAL_ERROR" % msg)

    def validate(self, src, tgt):
        for key in list(self.tables):
            q = "select count(*) from %s" % ".".join(qident(p) for p in key.split(".", 1))
            try:
                a = int(psql(src, q)[0][0])
                b = int(psql(tgt, q)[0][0])
            except (DbError, ValueError, IndexError) as e:
                with LOCK:
                    self.tables[key]["ValidationState"] = "Error"
                    self.tables[key]["ValidationStateDetails"] = str(e)
                continue
            with LOCK:
                st = self.tables[key]
                if a == b:
                    st["ValidationState"] = "Validated"
                    st["ValidationPendingRecords"] = 0
                else:
                    st["ValidationState"] = "Pending records"
                    st["ValidationPendingRecords"] = abs(a - b)

    def cdc_status(self, ev, base):
        """Per-table CDC counters from the mover's status line (changes applied on the target)."""
        with LOCK:
            for key, c in (ev.get("tables") or {}).items():
                st = self.tables.get(key)
                if st is None:
                    continue
                b = base.get(key, (0, 0, 0))
                ins, upd, dele = b[0] + c.get("inserts", 0), b[1] + c.get("updates", 0), b[2] + c.get("deletes", 0)
                if (ins, upd, dele) != (st["Inserts"], st["Updates"], st["Deletes"]):
                    st["LastUpdateTime"] = now_epoch()
                st["Inserts"] = st["AppliedInserts"] = ins
                st["Updates"] = st["AppliedUpdates"] = upd
                st["Deletes"] = st["AppliedDeletes"] = dele

    def put_latency(self, src_lat, tgt_lat):
        inst = INSTANCES.get(self.instance_arn) or self.instance_arn.rsplit(":", 1)[-1]
        dims = [{"Name": "ReplicationInstanceIdentifier", "Value": inst},
                {"Name": "ReplicationTaskIdentifier", "Value": self.arn.rsplit(":", 1)[-1]}]
        now = datetime.datetime.now(datetime.timezone.utc)
        try:
            moto_client("cloudwatch").put_metric_data(Namespace="AWS/DMS", MetricData=[
                {"MetricName": "CDCLatencySource", "Dimensions": dims, "Value": round(src_lat, 3),
                 "Unit": "Seconds", "Timestamp": now},
                {"MetricName": "CDCLatencyTarget", "Dimensions": dims, "Value": round(tgt_lat, 3),
                 "Unit": "Seconds", "Timestamp": now}])
            self.cdc_metrics.append(now_epoch())
            if len(self.cdc_metrics) == 1:
                log("task %s: CDC latency metrics published (dimensions %s)", self.id, dims)
        except Exception as e:  # noqa: BLE001
            log("put_metric_data failed: %s", e)


MOVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dms_mover.lua")


def assessment_run(spec):
    arn = "arn:aws:dms:%s:123456789012:assessment-run:%s" % (ARGS.region, uuid.uuid4().hex[:20].upper())
    run = {"ReplicationTaskAssessmentRunArn": arn, "ReplicationTaskArn": spec["ReplicationTaskArn"],
           "Status": "starting", "AssessmentRunName": spec.get("AssessmentRunName"),
           "ResultLocationBucket": spec.get("ResultLocationBucket"),
           "ResultLocationFolder": spec.get("ResultLocationFolder"),
           "ReplicationTaskAssessmentRunCreationDate": now_epoch(),
           "AssessmentProgress": {"IndividualAssessmentCount": len(spec.get("IncludeOnly") or [1] * 7),
                                  "IndividualAssessmentCompletedCount": 0},
           "_t0": now_epoch()}
    ASSESSMENTS[arn] = run
    log("assessment run %s for %s", spec.get("AssessmentRunName"), spec["ReplicationTaskArn"])

    def reports():
        # DMS writes the run's reports into the bucket: summary.json (first
        # while running, then final: two versions), one file per check, and
        # a working marker it removes (a delete marker in a versioned bucket)
        bucket = spec.get("ResultLocationBucket")
        if not bucket:
            return
        base = "%s/%s/" % (spec.get("ResultLocationFolder") or "assessment-reports", spec.get("AssessmentRunName"))
        s3 = moto_client("s3")
        try:
            s3.put_object(Bucket=bucket, Key=base + ".in-progress", Body=b"")
            s3.put_object(Bucket=bucket, Key=base + "summary.json", Body=json.dumps({"status": "running"}).encode())
            for name in spec.get("IncludeOnly") or ["all"]:
                s3.put_object(Bucket=bucket, Key=base + name + ".json",
                              Body=json.dumps({"name": name, "status": "passed"}).encode())
            s3.put_object(Bucket=bucket, Key=base + "summary.json", Body=json.dumps({"status": "passed"}).encode())
            s3.delete_object(Bucket=bucket, Key=base + ".in-progress")
        except Exception as e:  # noqa: BLE001
            log("assessment reports not written: %s", e)
    threading.Thread(target=reports, daemon=True).start()
    return run


def assessment_view(run):
    age = now_epoch() - run["_t0"]
    r = {k: v for k, v in run.items() if not k.startswith("_")}
    if age > 1.0:
        r["Status"] = "passed"
        r["AssessmentProgress"]["IndividualAssessmentCompletedCount"] = r["AssessmentProgress"]["IndividualAssessmentCount"]
    elif age > 0.3:
        r["Status"] = "running"
    return r


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

    def _xml_error(self, code, msg, status=400):
        body = ("<ErrorResponse><Error><Type>Sender</Type><Code>%s</Code><Message>%s</Message></Error>"
                "<RequestId>%s</RequestId></ErrorResponse>" % (code, msg.replace("&", "&amp;").replace("<", "&lt;"),
                                                               uuid.uuid4())).encode()
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
            return self._xml_error(e.code, e.message, e.status)
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
        return dms_route(h, target.split(".", 1)[1], body)
    if service == "cloudformation":
        return CFN.route(h, body)
    if service == "states" and target.startswith("AWSStepFunctions."):
        return SFN.route(h, target.split(".", 1)[1], body)
    if service == "sns":
        return sns_route(h, body)
    return None


def fwd_json(h, body):
    status, hdrs, data = forward(h.command, h.path, h.headers, body)
    if status >= 300:
        h._send(status, hdrs, data)
        return None
    return json.loads(data or b"{}")


def dms_route(h, op, body):
    req = json.loads(body or b"{}")
    if op == "CreateEndpoint":
        res = fwd_json(h, body)
        if res is None:
            return True
        arn = res["Endpoint"]["EndpointArn"]
        with LOCK:
            ENDPOINTS[arn] = Endpoint(arn, req)
        h._json(res)
        return True
    if op == "ModifyEndpoint":
        ep = ENDPOINTS.get(req.get("EndpointArn"))
        if ep is None:
            raise ApiError("ResourceNotFoundFault", "Endpoint not found")
        ep.update(req)
        h._json({"Endpoint": {"EndpointArn": ep.arn, "EndpointIdentifier": ep.id, "EndpointType": ep.type.upper(),
                              "EngineName": "postgres", "ServerName": ep.host, "Port": ep.port,
                              "DatabaseName": ep.db, "Username": ep.user, "SslMode": ep.ssl, "Status": "active"}})
        return True
    if op == "DeleteEndpoint":
        res = fwd_json(h, body)
        if res is None:
            return True
        with LOCK:
            ENDPOINTS.pop(req.get("EndpointArn"), None)
            for k in [k for k in CONNECTIONS if k[1] == req.get("EndpointArn")]:
                del CONNECTIONS[k]
        h._json(res)
        return True
    if op == "CreateReplicationInstance":
        res = fwd_json(h, body)
        if res is None:
            return True
        INSTANCES[res["ReplicationInstance"]["ReplicationInstanceArn"]] = req["ReplicationInstanceIdentifier"]
        h._json(res)
        return True
    if op == "TestConnection":
        # answered here entirely (moto 5.2.1 raises on a second test of the
        # same endpoint and filters connections wrongly)
        inst = json_call("DescribeReplicationInstances", {"Filters": [
            {"Name": "replication-instance-arn", "Values": [req.get("ReplicationInstanceArn", "")]}]})
        eps = json_call("DescribeEndpoints", {"Filters": [
            {"Name": "endpoint-arn", "Values": [req.get("EndpointArn", "")]}]})
        if not inst.get("ReplicationInstances"):
            raise ApiError("ResourceNotFoundFault", "Replication instance could not be found.")
        if not eps.get("Endpoints"):
            raise ApiError("ResourceNotFoundFault", "Endpoint could not be found.")
        key = (req["ReplicationInstanceArn"], req["EndpointArn"])
        cur = CONNECTIONS.get(key)
        if cur and cur["Status"] == "testing":
            raise ApiError("InvalidResourceStateFault", "A test connection is already in progress")
        test_connection(*key)
        with LOCK:
            CONNECTIONS[key]["EndpointIdentifier"] = eps["Endpoints"][0]["EndpointIdentifier"]
            CONNECTIONS[key]["ReplicationInstanceIdentifier"] = inst["ReplicationInstances"][0]["ReplicationInstanceIdentifier"]
        h._json({"Connection": connection_view(key)})
        return True
    if op == "DescribeConnections":
        keys = list(CONNECTIONS)
        for f in req.get("Filters", []):
            idx = {"replication-instance-arn": 0, "endpoint-arn": 1}.get(f["Name"])
            if idx is None:
                raise ApiError("InvalidParameterValueException", "unknown filter %s" % f["Name"])
            keys = [k for k in keys if k[idx] in f["Values"]]
        h._json({"Connections": [connection_view(k) for k in keys]})
        return True
    if op == "CreateReplicationTask":
        res = fwd_json(h, body)
        if res is None:
            return True
        t = res["ReplicationTask"]
        with LOCK:
            TASKS[t["ReplicationTaskArn"]] = Task(t["ReplicationTaskArn"], req, t)
            TASKS[t["ReplicationTaskArn"]].overlay(t)
        h._json(res)
        return True
    if op == "DescribeReplicationTasks":
        res = fwd_json(h, body)
        if res is None:
            return True
        for t in res.get("ReplicationTasks", []):
            task = TASKS.get(t["ReplicationTaskArn"])
            if task:
                task.overlay(t)
        h._json(res)
        return True
    if op == "StartReplicationTask":
        task = TASKS.get(req.get("ReplicationTaskArn"))
        if task is None:
            raise ApiError("ResourceNotFoundFault", "Replication task could not be found.")
        kind = req.get("StartReplicationTaskType", "start-replication")
        if kind not in ("start-replication", "resume-processing", "reload-target"):
            raise ApiError("InvalidParameterValueException", "bad StartReplicationTaskType %s" % kind)
        task.start(kind)
        res = fwd_json(h, body)   # moto moves its own record to running
        if res is None:
            return True
        task.overlay(res["ReplicationTask"])
        log("task %s started (%s)", task.id, kind)
        h._json(res)
        return True
    if op == "StopReplicationTask":
        task = TASKS.get(req.get("ReplicationTaskArn"))
        if task is None:
            raise ApiError("ResourceNotFoundFault", "Replication task could not be found.")
        task.stop()
        d = json_call("DescribeReplicationTasks", {"Filters": [{"Name": "replication-task-arn",
                                                                 "Values": [task.arn]}]})["ReplicationTasks"][0]
        h._json({"ReplicationTask": task.overlay(d)})
        return True
    if op == "DeleteReplicationTask":
        task = TASKS.get(req.get("ReplicationTaskArn"))
        if task and task.status in ("running", "starting", "stopping"):
            raise ApiError("InvalidResourceStateFault", "The task is %s; stop it first" % task.status)
        if task:
            task.drop_movement()
        res = fwd_json(h, body)
        if res is None:
            return True
        with LOCK:
            TASKS.pop(req.get("ReplicationTaskArn"), None)
        res["ReplicationTask"]["Status"] = "deleting"
        h._json(res)
        return True
    if op == "DescribeTableStatistics":
        task = TASKS.get(req.get("ReplicationTaskArn"))
        if task is None:
            raise ApiError("ResourceNotFoundFault", "Replication task could not be found.")
        stats = task.table_stats()
        h._json({"ReplicationTaskArn": task.arn, "TableStatistics": stats})
        return True
    if op == "StartReplicationTaskAssessmentRun":
        if req.get("ReplicationTaskArn") not in TASKS:
            raise ApiError("ResourceNotFoundFault", "Replication task could not be found.")
        run = assessment_run(req)
        h._json({"ReplicationTaskAssessmentRun": assessment_view(run)})
        return True
    if op == "DescribeReplicationTaskAssessmentRuns":
        runs = list(ASSESSMENTS.values())
        for f in req.get("Filters", []):
            key = {"replication-task-assessment-run-arn": "ReplicationTaskAssessmentRunArn",
                   "replication-task-arn": "ReplicationTaskArn"}.get(f["Name"])
            if key:
                runs = [r for r in runs if r[key] in f["Values"]]
        if not runs:
            raise ApiError("ResourceNotFoundFault", "No assessment runs found")
        h._json({"ReplicationTaskAssessmentRuns": [assessment_view(r) for r in runs]})
        return True
    return None


# ---------------------------------------------------------------------------
# CloudFormation: the AWS::DMS::* (and AWS::SNS::Subscription) resources
# moto skips, created from the template with their properties resolved
# ---------------------------------------------------------------------------


CFN_NS = "http://cloudformation.amazonaws.com/doc/2010-05-15/"
ACCOUNT = "123456789012"
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
    res = Resolver(stack.template, stack.params, stack.name, ARGS.region)
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
    if rtype == "AWS::DMS::ReplicationSubnetGroup":
        props.setdefault("ReplicationSubnetGroupIdentifier", ("%s-%s" % (stack.name, logical)).lower())
        json_call("CreateReplicationSubnetGroup", props)
        return props["ReplicationSubnetGroupIdentifier"], None
    if rtype == "AWS::DMS::ReplicationInstance":
        props.setdefault("ReplicationInstanceIdentifier", ("%s-%s" % (stack.name, logical)).lower())
        int_props(props, ["AllocatedStorage", "MultiAZ", "PubliclyAccessible", "AutoMinorVersionUpgrade"])
        r = json_call("CreateReplicationInstance", props)["ReplicationInstance"]
        INSTANCES[r["ReplicationInstanceArn"]] = props["ReplicationInstanceIdentifier"]
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
    stack.event(stack.name, "AWS::CloudFormation::Stack", "CREATE_IN_PROGRESS", reason="User Initiated")

    def later():
        time.sleep(0.5)   # the creation takes a moment, as it does on AWS
        create_stack_resources(stack)
    threading.Thread(target=later, daemon=True).start()
    log("stack %s created (%d DMS resources to create)", stack.name,
        sum(1 for r in (stack.template.get("Resources") or {}).values() if r.get("Type") in DMS_TYPES))
    h._send(status, hdrs, data)
    return True


def cfn_describe(h, body, form):
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


# ---------------------------------------------------------------------------
# Step Functions: a small interpreter for the state machines pgtide deploys
# ---------------------------------------------------------------------------


class StatesError(Exception):
    def __init__(self, error, cause=""):
        super().__init__("%s: %s" % (error, cause))
        self.error, self.cause = error, cause


def _path_parts(path):
    if not (path == "$" or path.startswith("$.") or path.startswith("$[")):
        raise StatesError("States.Runtime", "bad JSONPath %s" % path)
    parts = []
    for m in re.finditer(r"\.([^.\[\]]+)|\[(\d+)\]", path[1:]):
        parts.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
    return parts


def get_path(data, path, ctx=None):
    if path.startswith("$$"):
        data, path = ctx, path[1:]
    cur = data
    for p in _path_parts(path):
        if isinstance(p, int):
            if not isinstance(cur, list) or p >= len(cur):
                raise StatesError("States.Runtime", "the JSONPath %s could not be found in the input" % path)
            cur = cur[p]
        else:
            if not isinstance(cur, dict) or p not in cur:
                raise StatesError("States.Runtime", "the JSONPath %s could not be found in the input" % path)
            cur = cur[p]
    return cur


def present(data, path):
    try:
        get_path(data, path)
        return True
    except StatesError:
        return False


def set_path(data, path, value):
    if path is None:
        return data
    if path == "$":
        return value
    parts = _path_parts(path)
    root = json.loads(json.dumps(data)) if isinstance(data, (dict, list)) else {}
    if not isinstance(root, dict):
        root = {}
    cur = root
    for p in parts[:-1]:
        if not isinstance(cur.get(p), dict):
            cur[p] = {}
        cur = cur[p]
    cur[parts[-1]] = value
    return root


def parse_intrinsic(expr, data, ctx):
    """Evaluate States.X(...) calls."""
    pos = [0]
    s = expr

    def skip():
        while pos[0] < len(s) and s[pos[0]] in " \t":
            pos[0] += 1

    def arg():
        skip()
        c = s[pos[0]]
        if c == "'":
            j = pos[0] + 1
            out = []
            while s[j] != "'":
                if s[j] == "\\":
                    out.append(s[j + 1])
                    j += 2
                    continue
                out.append(s[j])
                j += 1
            pos[0] = j + 1
            return "".join(out)
        if c == "$":
            j = pos[0]
            while j < len(s) and s[j] not in ",)":
                j += 1
            p = s[pos[0]:j].strip()
            pos[0] = j
            return get_path(data, p, ctx)
        if s.startswith("States.", pos[0]):
            return call()
        j = pos[0]
        while j < len(s) and s[j] not in ",)":
            j += 1
        tok = s[pos[0]:j].strip()
        pos[0] = j
        return json.loads(tok)

    def call():
        m = re.match(r"States\.(\w+)\(", s[pos[0]:])
        name = m.group(1)
        pos[0] += m.end()
        args = []
        skip()
        if s[pos[0]] != ")":
            while True:
                args.append(arg())
                skip()
                if s[pos[0]] == ",":
                    pos[0] += 1
                    continue
                break
        assert s[pos[0]] == ")", "bad intrinsic %s" % s
        pos[0] += 1
        if name == "Array":
            return list(args)
        if name == "Format":
            parts = args[0].split("{}")
            out = parts[0]
            for i, p in enumerate(parts[1:]):
                v = args[i + 1]
                out += (json.dumps(v) if isinstance(v, (dict, list)) else ("" if v is None else str(v))) + p
            return out
        if name == "MathAdd":
            return int(args[0]) + int(args[1])
        if name == "StringToJson":
            return json.loads(args[0])
        if name == "JsonToString":
            return json.dumps(args[0], separators=(",", ":"), default=str)
        raise StatesError("States.Runtime", "unsupported intrinsic States.%s" % name)

    return call()


def resolve_params(tmpl, data, ctx):
    if isinstance(tmpl, dict):
        out = {}
        for k, v in tmpl.items():
            if k.endswith(".$"):
                out[k[:-2]] = parse_intrinsic(v, data, ctx) if v.startswith("States.") else get_path(data, v, ctx)
            else:
                out[k] = resolve_params(v, data, ctx)
        return out
    if isinstance(tmpl, list):
        return [resolve_params(x, data, ctx) for x in tmpl]
    return tmpl


def choice_true(rule, data):
    if "And" in rule:
        return all(choice_true(r, data) for r in rule["And"])
    if "Or" in rule:
        return any(choice_true(r, data) for r in rule["Or"])
    if "Not" in rule:
        return not choice_true(rule["Not"], data)
    var = rule["Variable"]
    if "IsPresent" in rule:
        return present(data, var) == rule["IsPresent"]
    if not present(data, var):
        raise StatesError("States.Runtime", "Invalid path %s: the choice state's condition path references an "
                          "invalid value" % var)
    v = get_path(data, var)
    for op, want in rule.items():
        if op in ("Variable", "Next"):
            continue
        if op == "StringEquals":
            return isinstance(v, str) and v == want
        if op == "StringMatches":
            rx = "^" + ".*".join(re.escape(p) for p in want.split("*")) + "$"
            return isinstance(v, str) and re.match(rx, v, re.S) is not None
        if op == "BooleanEquals":
            return v is want
        if op.startswith("Numeric"):
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                return False
            return {"NumericEquals": v == want, "NumericLessThan": v < want, "NumericGreaterThan": v > want,
                    "NumericLessThanEquals": v <= want, "NumericGreaterThanEquals": v >= want}[op]
    raise StatesError("States.Runtime", "unsupported choice rule %s" % rule)


def error_matches(names, error):
    return "States.ALL" in names or error in names or ("States.TaskFailed" in names and error != "States.Timeout")


EXECUTIONS = {}
SDK_SERVICES = {"databasemigration": ("dms", "DatabaseMigration"), "ec2": ("ec2", "Ec2"), "sns": ("sns", "Sns"),
                "s3": ("s3", "S3")}


def self_client(service):
    key = "self:" + service
    with LOCK:
        if key not in CLIENTS:
            CLIENTS[key] = boto3.client(service, endpoint_url="http://127.0.0.1:%d" % ARGS.port,
                                        region_name=ARGS.region, aws_access_key_id=KEY_ID,
                                        aws_secret_access_key=SECRET,
                                        config=Config(retries={"max_attempts": 1}, parameter_validation=True))
        return CLIENTS[key]


def plain(v):
    return json.loads(json.dumps(v, default=lambda x: x.isoformat() if hasattr(x, "isoformat") else str(x)))


class Execution:
    def __init__(self, arn, sm_arn, name, definition, input_text):
        self.arn, self.sm_arn, self.name = arn, sm_arn, name
        self.definition = json.loads(definition)
        self.input = json.loads(input_text or "{}")
        self.status = "RUNNING"
        self.start = now_epoch()
        self.stop = None
        self.output = None
        self.error = None
        self.cause = None
        self.events = []
        self.aborted = threading.Event()
        self.ctx = {"Execution": {"Id": arn, "Name": name, "StartTime": iso(datetime.datetime.utcnow())},
                    "StateMachine": {"Id": sm_arn}}
        self.scale = float(os.environ.get("STANDIN_SFN_RETRY_SCALE", "1"))

    def event(self, etype, **details):
        with LOCK:
            ev = {"timestamp": now_epoch(), "type": etype, "id": len(self.events) + 1,
                  "previousEventId": len(self.events)}
            ev.update(details)
            self.events.append(ev)

    def sleep(self, seconds):
        if self.aborted.wait(seconds):
            raise StatesError("States.Aborted", "execution aborted")

    def run(self):
        self.event("ExecutionStarted", executionStartedEventDetails={"input": json.dumps(self.input)})
        try:
            out = self.run_machine(self.definition, self.input)
            self.output, self.status = out, "SUCCEEDED"
            self.event("ExecutionSucceeded", executionSucceededEventDetails={"output": json.dumps(out)})
        except StatesError as e:
            if self.status == "ABORTED":
                return
            self.status, self.error, self.cause = "FAILED", e.error, e.cause
            self.event("ExecutionFailed", executionFailedEventDetails={"error": e.error, "cause": e.cause})
        except Exception as e:  # noqa: BLE001
            log("execution %s crashed: %s", self.name, traceback.format_exc())
            self.status, self.error, self.cause = "FAILED", "States.Runtime", str(e)
            self.event("ExecutionFailed", executionFailedEventDetails={"error": "States.Runtime", "cause": str(e)})
        finally:
            self.stop = now_epoch()
            log("execution %s: %s %s", self.name, self.status, self.error or "")

    def run_machine(self, machine, data):
        name = machine["StartAt"]
        states = machine["States"]
        deadline = now_epoch() + machine.get("TimeoutSeconds", 10 ** 9)
        steps = 0
        while True:
            steps += 1
            if steps > 100000 or now_epoch() > deadline:
                raise StatesError("States.Timeout", "the state machine ran out of time")
            st = states[name]
            t = st["Type"]
            self.event(t + "StateEntered", stateEnteredEventDetails={"name": name, "input": json.dumps(data)})
            try:
                data, nxt = self.run_state(name, st, data)
            except StatesError as e:
                handler = None
                for c in st.get("Catch", []):
                    if error_matches(c["ErrorEquals"], e.error):
                        handler = c
                        break
                if handler is None:
                    raise
                data = set_path(data, handler.get("ResultPath", "$"), {"Error": e.error, "Cause": e.cause})
                nxt = handler["Next"]
            self.event(t + "StateExited", stateExitedEventDetails={"name": name})
            if nxt is None:
                return data
            name = nxt

    def run_state(self, name, st, data):
        t = st["Type"]
        if t == "Pass":
            eff = get_path(data, st.get("InputPath", "$")) if st.get("InputPath", "$") is not None else {}
            res = st["Result"] if "Result" in st else (resolve_params(st["Parameters"], eff, self.ctx)
                                                     if "Parameters" in st else eff)
            out = set_path(data, st.get("ResultPath", "$"), res)
            return self.output_path(st, out), None if st.get("End") else st["Next"]
        if t == "Wait":
            secs = st.get("Seconds")
            if secs is None and "SecondsPath" in st:
                secs = get_path(data, st["SecondsPath"])
            self.sleep(float(secs or 0))
            return data, None if st.get("End") else st["Next"]
        if t == "Choice":
            for rule in st["Choices"]:
                if choice_true(rule, data):
                    return data, rule["Next"]
            if "Default" not in st:
                raise StatesError("States.NoChoiceMatched", "no choice rule matched in %s" % name)
            return data, st["Default"]
        if t == "Succeed":
            return data, None
        if t == "Fail":
            raise StatesError(st.get("Error", "States.Fail"), st.get("Cause", ""))
        if t == "Parallel":
            results = [self.run_machine(b, json.loads(json.dumps(data))) for b in st["Branches"]]
            out = set_path(data, st.get("ResultPath", "$"), results)
            return self.output_path(st, out), None if st.get("End") else st["Next"]
        if t == "Task":
            eff = get_path(data, st.get("InputPath", "$"))
            params = resolve_params(st["Parameters"], eff, self.ctx) if "Parameters" in st else eff
            attempt = {}
            while True:
                try:
                    res = self.call(st["Resource"], params)
                    self.event("TaskSucceeded", taskSucceededEventDetails={"resource": st["Resource"]})
                    break
                except StatesError as e:
                    self.event("TaskFailed", taskFailedEventDetails={"resource": st["Resource"], "error": e.error,
                                                                     "cause": e.cause})
                    retry = None
                    for i, r in enumerate(st.get("Retry", [])):
                        if error_matches(r["ErrorEquals"], e.error):
                            retry = (i, r)
                            break
                    if retry is None:
                        raise
                    i, r = retry
                    n = attempt.get(i, 0)
                    if n >= r.get("MaxAttempts", 3):
                        raise
                    attempt[i] = n + 1
                    self.sleep(r.get("IntervalSeconds", 1) * (r.get("BackoffRate", 2.0) ** n) * self.scale)
            if "ResultSelector" in st:
                res = resolve_params(st["ResultSelector"], res, self.ctx)
            out = set_path(data, st.get("ResultPath", "$"), res)
            return self.output_path(st, out), None if st.get("End") else st["Next"]
        raise StatesError("States.Runtime", "unsupported state type %s" % t)

    def output_path(self, st, data):
        p = st.get("OutputPath", "$")
        return get_path(data, p) if p else {}

    def call(self, resource, params):
        m = re.match(r"arn:aws:states:::aws-sdk:(\w+):(\w+)$", resource)
        if m:
            svc, prefix = SDK_SERVICES.get(m.group(1), (m.group(1), m.group(1).capitalize()))
            method = botocore.xform_name(m.group(2))
        elif resource == "arn:aws:states:::sns:publish":
            svc, prefix, method = "sns", "Sns", "publish"
        else:
            raise StatesError("States.Runtime", "unsupported resource %s" % resource)
        client = self_client(svc)
        try:
            r = getattr(client, method)(**params)
        except botocore.exceptions.ClientError as e:
            err = e.response.get("Error", {})
            code = err.get("Code", "Unknown")
            raise StatesError("%s.%s" % (prefix, code), "%s (Service: %s, Status Code: %s, Error Code: %s)" % (
                err.get("Message", ""), svc, e.response.get("ResponseMetadata", {}).get("HTTPStatusCode"), code))
        except botocore.exceptions.ParamValidationError as e:
            raise StatesError("States.Runtime", str(e))
        r = plain(r)
        r.pop("ResponseMetadata", None)
        return r


class SfnRoute:
    @staticmethod
    def route(h, op, body):
        req = json.loads(body or b"{}")
        if op == "StartExecution":
            res = fwd_json(h, body)
            if res is None:
                return True
            sm = moto_client("stepfunctions").describe_state_machine(stateMachineArn=req["stateMachineArn"])
            name = res["executionArn"].rsplit(":", 1)[-1]
            ex = Execution(res["executionArn"], req["stateMachineArn"], name, sm["definition"], req.get("input"))
            EXECUTIONS[ex.arn] = ex
            threading.Thread(target=ex.run, daemon=True).start()
            log("execution %s started", name)
            h._json(res)
            return True
        if op == "DescribeExecution":
            ex = EXECUTIONS.get(req.get("executionArn"))
            res = fwd_json(h, body)
            if res is None:
                return True
            if ex:
                res["status"] = ex.status
                if ex.stop:
                    res["stopDate"] = ex.stop
                if ex.output is not None:
                    res["output"] = json.dumps(ex.output)
                if ex.error:
                    res["error"], res["cause"] = ex.error, ex.cause
            h._json(res)
            return True
        if op == "GetExecutionHistory":
            ex = EXECUTIONS.get(req.get("executionArn"))
            if ex is None:
                return None
            with LOCK:
                events = list(ex.events)
            if req.get("reverseOrder"):
                events.reverse()
            h._json({"events": events})
            return True
        if op == "StopExecution":
            ex = EXECUTIONS.get(req.get("executionArn"))
            res = fwd_json(h, body)
            if res is None:
                return True
            if ex and ex.status == "RUNNING":
                ex.status = "ABORTED"
                ex.aborted.set()
            h._json(res)
            return True
        return None


CFN = CfnRoute()
SFN = SfnRoute()


def serve(argv):
    global ARGS, LOG
    ap = argparse.ArgumentParser(prog="dms_standin.py serve")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--moto", required=True)
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--pgtide", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "pgtide"))
    ap.add_argument("--workdir", default="/tmp")
    ARGS = ap.parse_args(argv)
    if not KEY_ID or not SECRET:
        print("STANDIN_ACCESS_KEY_ID and STANDIN_SECRET_ACCESS_KEY must be set", file=sys.stderr)
        return 2
    SECRETS.add(SECRET)
    os.makedirs(ARGS.workdir, exist_ok=True)
    LOG = open(os.path.join(ARGS.workdir, "dms_standin.log"), "a")
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
