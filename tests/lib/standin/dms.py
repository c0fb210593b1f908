"""standin.dms: the DMS behaviour moto lacks (connection tests, task
lifecycle and data movement, table statistics, assessments, CloudWatch
latency).  See dms_standin.py for the overview."""
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
from standin.iam import vpc_role_check

# ---------------------------------------------------------------------------
# DMS emulation
# ---------------------------------------------------------------------------

ENDPOINTS = {}      # arn -> Endpoint
CONNECTIONS = {}    # (instance arn, endpoint arn) -> {"Status", "LastFailureMessage"}
TASKS = {}          # arn -> Task
ASSESSMENTS = {}    # arn -> dict
INSTANCES = {}      # arn -> identifier


INSTANCE_T0 = {}    # arn -> when it was created (status "creating" until delay("instance") later)

# Describe* operations and the filters that name one resource: the first
# such describe after the create answers ResourceNotFoundFault (see
# mark_fresh), as DMS does for a resource it does not know (yet).
FILTER_KEYS = {
    "DescribeReplicationInstances": ("replication-instance-id", "replication-instance-arn"),
    "DescribeEndpoints": ("endpoint-id", "endpoint-arn"),
    "DescribeReplicationTasks": ("replication-task-id", "replication-task-arn"),
    "DescribeReplicationSubnetGroups": ("replication-subnet-group-id",),
}


def not_found_if_fresh(op, req):
    names = FILTER_KEYS[op]
    values = [v for f in req.get("Filters", []) if f.get("Name") in names for v in f.get("Values", [])]
    if values and consume_fresh(values):
        raise ApiError("ResourceNotFoundFault", "No resources found matching the filters (%s)" % ", ".join(values))


def instance_created(arn, ident):
    with LOCK:
        INSTANCES[arn] = ident
        INSTANCE_T0[arn] = now_epoch()


def instance_overlay(i):
    """An instance is 'creating' for delay('instance') seconds (moto makes it available at once)."""
    t0 = INSTANCE_T0.get(i.get("ReplicationInstanceArn"))
    if t0 is not None and now_epoch() - t0 < delay("instance") and i.get("ReplicationInstanceStatus") == "available":
        i["ReplicationInstanceStatus"] = "creating"
        i.pop("ReplicationInstancePublicIpAddress", None)


# ---------------------------------------------------------------------------
# test_decoding output -> SQL (the CDC-only replay)
# ---------------------------------------------------------------------------

def _ident(s, i):
    """An identifier at s[i] (quoted or not) -> (name, next index)."""
    if s[i] == '"':
        j, out = i + 1, []
        while True:
            if s[j] == '"' and s[j + 1:j + 2] == '"':
                out.append('"')
                j += 2
            elif s[j] == '"':
                return "".join(out), j + 1
            else:
                out.append(s[j])
                j += 1
    j = i
    while j < len(s) and s[j] not in ".[: ":
        j += 1
    return s[i:j], j


def _columns(s):
    """'a[integer]:1 b[text]:'x y' ...' -> [(name, type, value or None)]."""
    out, i = [], 0
    while i < len(s):
        while i < len(s) and s[i] == " ":
            i += 1
        if i >= len(s) or s.startswith("new-tuple:", i) or s.startswith("old-key:", i):
            break
        name, i = _ident(s, i)
        assert s[i] == "[", s
        depth, j = 0, i
        while True:
            if s[j] == "[":
                depth += 1
            elif s[j] == "]":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        typ, i = s[i + 1:j], j + 2          # skip "]:"
        if s[i] == "'":
            j, val = i + 1, []
            while True:
                if s[j] == "'" and s[j + 1:j + 2] == "'":
                    val.append("'")
                    j += 2
                elif s[j] == "'":
                    break
                else:
                    val.append(s[j])
                    j += 1
            out.append((name, typ, "".join(val)))
            i = j + 1
        else:
            j = s.find(" ", i)
            j = len(s) if j < 0 else j
            tok = s[i:j]
            out.append((name, typ, None if tok == "null" else tok))
            i = j
    return out


def parse_test_decoding(data):
    """'table public.t: UPDATE: old-key: id[integer]:1 new-tuple: id[integer]:2 ...' ->
    (schema.table, action, new columns, old key columns)."""
    s = data[len("table "):]
    schema, i = _ident(s, 0)
    table, i = _ident(s, i + 1)
    rest = s[i + 2:]
    action, rest = rest.split(":", 1)
    rest = rest.strip()
    old = None
    if rest.startswith("old-key:"):
        k = rest.index("new-tuple:")
        old, rest = _columns(rest[len("old-key:"):k].strip()), rest[k + len("new-tuple:"):].strip()
    if rest.startswith("(no-tuple-data)"):
        return None
    return ("%s.%s" % (schema, table), action, _columns(rest), old)


def primary_key(conn_ep, qualified):
    schema, table = qualified.split(".", 1)
    rows = psql(conn_ep, "select a.attname from pg_index i join pg_attribute a on a.attrelid = i.indrelid and "
                "a.attnum = any (i.indkey) where i.indrelid = '%s.%s'::regclass and i.indisprimary"
                % (qident(schema), qident(table)))
    return [r[0] for r in rows]


def change_sql(change, key):
    qualified, action, cols, old = change
    schema, table = qualified.split(".", 1)
    target = "%s.%s" % (qident(schema), qident(table))

    def val(c):
        return "NULL" if c[2] is None else "%s::%s" % (lit(c[2]), c[1])
    cols = [c for c in cols if c[2] != "unchanged-toast-datum"]
    if action == "INSERT":
        return "insert into %s (%s) values (%s);" % (target, ", ".join(qident(c[0]) for c in cols),
                                                      ", ".join(val(c) for c in cols))
    where_cols = old or [c for c in cols if c[0] in key]
    where = " and ".join("%s = %s" % (qident(c[0]), val(c)) for c in where_cols)
    if action == "UPDATE":
        return "update %s set %s where %s;" % (target, ", ".join("%s = %s" % (qident(c[0]), val(c)) for c in cols),
                                               where)
    return "delete from %s where %s;" % (target, where)


def network_blocks(inst_arn, ep):
    """Security groups gate connectivity (moto does not model the network).

    When <workdir>/network.json names {"source_security_group": "sg-..."},
    the replication instance reaches a SOURCE endpoint only if that
    security group has an ingress rule admitting one of the instance's
    security groups on the endpoint's port.  -> reason or None.
    """
    path = os.path.join(C.ARGS.workdir, "network.json")
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
        time.sleep(delay("connection"))
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
        self.cdc_start = spec.get("CdcStartPosition")
        self.start_position = None
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
            if self.status == "creating" and now_epoch() - self.created > delay("task"):
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
    def start(self, kind, cdc_start=None):
        with LOCK:
            if self.status == "creating":
                raise ApiError("InvalidResourceStateFault", "Replication task is being created")
            if self.status in ("running", "starting", "stopping", "testing"):
                raise ApiError("InvalidResourceStateFault", "Replication task is %s" % self.status)
            # "resume-processing is only available for previously executed
            # tasks" (StartReplicationTaskType, the DMS service model)
            if kind == "resume-processing" and self.start_date is None:
                raise ApiError("InvalidResourceStateFault", "resume-processing is only available for previously "
                               "executed tasks: the first start of a task is start-replication")
            self.start_position = cdc_start or self.cdc_start
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
        time.sleep(delay("task"))
        slot = src.eca.get("slotname")
        if slot and "cdc" in self.migration_type:
            rows = psql(src, "select plugin from pg_replication_slots where slot_name = %s" % lit(slot))
            if not rows:
                raise DbError("Replication slot '%s' does not exist on the source (slotName)" % slot)
            if kind != "resume-processing":
                self.check_start_position(src, slot)
        names = selected_tables(src, self.mappings)
        if not names:
            raise DbError("No tables were found at task initialization (FailOnNoTablesCaptured)")
        self.create_control_tables(tgt)
        if "cdc" in self.migration_type:
            self.heartbeat(src, create=True)
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
        elif self.migration_type == "cdc":
            mode = "cdconly" if kind != "resume-processing" else "resume"
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

    def create_control_tables(self, tgt):
        """DMS's control tables on the target, as the target endpoint's user.

        "Control table task settings" (DMS User Guide): the apply exceptions
        table (awsdms_apply_exceptions) "is always created"; with data
        validation, awsdms_validation_failures_v1 holds the failures.  They
        go to ControlSchema, or the database's default schema (public for
        PostgreSQL) when it is empty; DMS creates a missing control schema.
        A user who may not create them fails the task.
        """
        try:
            settings = json.loads(self.settings or "{}")
        except ValueError:
            settings = {}
        schema = ((settings.get("ControlTablesSettings") or {}).get("ControlSchema") or "public")
        qs = qident(schema)
        sql = ["create schema if not exists %s" % qs] if schema != "public" else []
        sql.append('create table if not exists %s.awsdms_apply_exceptions ("TASK_NAME" varchar(128) not null, '
                   '"TABLE_OWNER" varchar(128) not null, "TABLE_NAME" varchar(128) not null, '
                   '"ERROR_TIME" timestamp not null, "STATEMENT" text not null, "ERROR" text not null)' % qs)
        if (settings.get("ValidationSettings") or {}).get("EnableValidation"):
            sql.append('create table if not exists %s.awsdms_validation_failures_v1 ("TASK_NAME" varchar(128) '
                       'not null, "TABLE_OWNER" varchar(128) not null, "TABLE_NAME" varchar(128) not null, '
                       '"FAILURE_TIME" timestamp not null, "KEY_TYPE" varchar(128) not null, "KEY" varchar(7800) '
                       'not null, "FAILURE_TYPE" varchar(128) not null, "DETAILS" varchar(7800) not null)' % qs)
        try:
            psql(tgt, "; ".join(sql))
        except DbError as e:
            raise DbError("Failed to create the control tables in schema %s on the target: %s" % (schema, e))
        log("task %s: control tables in %s on the target", self.id, schema)

    def heartbeat(self, src, create=False):
        """DMS's WAL heartbeat on the source (heartbeatEnable=true).

        PostgreSQLSettings.HeartbeatEnable (the DMS service model): "The
        write-ahead log (WAL) heartbeat feature mimics a dummy transaction.
        By doing this, it prevents idle logical replication slots from
        holding onto old WAL logs ... This heartbeat keeps restart_lsn
        moving"; HeartbeatFrequency is in minutes (default 5), HeartbeatSchema
        "the schema in which the heartbeat artifacts are created" (default
        public).  The artifact is the table awsdms_heartbeat, made by the
        source endpoint's user at task start (a user who may not create it
        fails the task), then updated every HeartbeatFrequency minutes
        (delay("minute") seconds each here).  -> seconds between beats, or
        None when the heartbeat is off.
        """
        if (src.eca.get("heartbeatenable") or "").lower() not in ("true", "y", "yes", "1"):
            return None
        schema = qident(src.eca.get("heartbeatschema") or "public")
        if create:
            try:
                psql(src, "create table if not exists %s.awsdms_heartbeat (hb_key serial primary key, "
                     "hb_created_at timestamp, hb_created_by varchar(64), hb_last_heartbeat_at timestamp, "
                     "hb_last_heartbeat_by varchar(64)); insert into %s.awsdms_heartbeat (hb_key, hb_created_at, "
                     "hb_created_by) values (1, now(), current_user) on conflict (hb_key) do nothing"
                     % (schema, schema))
            except DbError as e:
                raise DbError("Failed to create the heartbeat table %s.awsdms_heartbeat on the source: %s" % (schema, e))
        else:
            psql(src, "update %s.awsdms_heartbeat set hb_last_heartbeat_at = now(), hb_last_heartbeat_by = "
                 "current_user where hb_key = 1" % schema)
        return float(src.eca.get("heartbeatfrequency") or 5) * delay("minute")

    def replay(self, src, tgt, slot, upto, names):
        """CDC from the task's start position (the slot's confirmed position)
        up to 'upto', read from the slotName slot with test_decoding
        (pg_logical_slot_peek_changes) and applied to the target in commit
        order, one target transaction per source transaction, as the target
        endpoint's user.  The slot itself moves later, as DMS confirms."""
        rows = psql(src, "select data from pg_logical_slot_peek_changes(%s, %s::pg_lsn, null)" % (lit(slot), lit(upto)))
        wanted = {"%s.%s" % n for n in names}
        keys = {}
        txn, applied = [], 0
        for (data,) in rows:
            if data.startswith("BEGIN"):
                txn = []
            elif data.startswith("COMMIT"):
                if txn:
                    psql(tgt, None, stdin="\n".join(txn) + "\n")
                    applied += 1
                txn = []
            elif data.startswith("table "):
                change = parse_test_decoding(data)
                if change and change[0] in wanted:
                    if change[0] not in keys:
                        keys[change[0]] = primary_key(tgt, change[0])
                    txn.append(change_sql(change, keys[change[0]]))
        log("task %s: replayed %d transaction(s) from slot %s up to %s", self.id, applied, slot, upto)

    def check_start_position(self, src, slot):
        """A named slot needs a valid CdcStartPosition.

        PostgreSQLSettings.SlotName (the DMS service model): "DMS verifies
        that the specified logical replication slot exists before starting
        the CDC load task. It also verifies that the task was created with
        a valid setting of CdcStartPosition. If the specified slot doesn't
        exist or the task doesn't have a valid CdcStartPosition setting,
        DMS raises an error."  Valid here: an LSN (X/X) between the slot's
        restart_lsn and the current WAL position.
        """
        pos = self.start_position
        why = None
        if not pos:
            why = "the task has no CdcStartPosition"
        elif not re.fullmatch(r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}", pos):
            why = "CdcStartPosition '%s' is not an LSN of this source" % pos
        else:
            ok = psql(src, "select (%s::pg_lsn between restart_lsn and pg_current_wal_lsn())::text "
                      "from pg_replication_slots where slot_name = %s" % (lit(pos), lit(slot)))
            if not ok or ok[0][0] != "true":
                why = "CdcStartPosition %s is outside the WAL the slot keeps" % pos
        if why:
            raise DbError("Replication slot '%s' is given as slotName but %s: a named slot needs a valid "
                          "CdcStartPosition (native CDC start point)" % (slot, why))
        log("task %s: CDC starts at %s (slot %s)", self.id, pos, slot)

    # -- data movement: tests/lib/dms_mover.lua ---------------------------
    def mover_name(self):
        """Slot and publication of this task's mover (derived from the task, so deletion finds them)."""
        base = "standin_" + re.sub(r"[^a-z0-9_]", "_", self.id.lower())
        return base[:54] + "_" + hashlib.sha1(self.arn.encode()).hexdigest()[:8]

    def mover_dir(self):
        d = os.path.join(C.ARGS.workdir, "mover-" + self.mover_name())
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
        args = [C.ARGS.pgtide, "script", MOVER, mode, src.conninfo(), tgt.conninfo(), json.dumps(tables),
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
        try:
            admin_psql(src, "drop publication if exists %s" % qident(self.mover_name()))
        except DbError as e:
            log("task %s: dropping publication %s failed: %s", self.id, self.mover_name(), e)
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
        if mode not in ("resume", "cdconly"):
            with LOCK:
                self.full_load_start = now_epoch()
                for v in self.tables.values():
                    v["TableState"] = "Full load"
                    v["FullLoadStartTime"] = now_epoch()
        with LOCK:   # CDC counters of this run add to those of earlier runs
            base = {k: (v["Inserts"], v["Updates"], v["Deletes"]) for k, v in self.tables.items()}
        if mode in ("load", "cdconly"):
            # the publication pgoutput reads (owner's or superuser's business:
            # made by the test's administrator, see admin_psql)
            pub = qident(self.mover_name())
            admin_psql(src, "drop publication if exists %s; create publication %s for table %s"
                       % (pub, pub, ", ".join(".".join(qident(x) for x in n) for n in names)))
        p, errf, pgpass = self.run_mover(src, tgt, mode, tables, dms_slot)
        phase = {"v": "load" if mode not in ("resume", "cdconly") else "cdc", "stop": False}
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

        def beat():
            # DMS's heartbeat transactions while the task runs
            period = self.heartbeat(src) if "cdc" in self.migration_type else None
            while period and p.poll() is None and not self.stop_event.wait(period):
                try:
                    self.heartbeat(src)
                except (DbError, subprocess.TimeoutExpired) as e:
                    log("task %s: heartbeat failed: %s", self.id, e)
        threading.Thread(target=beat, daemon=True).start()
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
                elif ev.get("event") == "slot" and mode == "cdconly":
                    # what happened between the task's start position and the
                    # mover's own slot comes from the task's slot, then go
                    try:
                        self.replay(src, tgt, dms_slot, ev.get("lsn"), names)
                    except (DbError, subprocess.TimeoutExpired) as e:
                        p.terminate()
                        raise DbError("CDC apply failed: %s" % e)
                    open(os.path.join(self.mover_dir(), "go"), "w").close()
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


MOVER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "dms_mover.lua")


# Individual assessments the stand-in really evaluates on the source (the
# others pass): "postgres-check-walsenderstimeout" (wal_sender_timeout 0 or
# >= 10000 ms), "postgres-check-wallevel" (logical), "postgres-check-pk" and
# "table-with-no-primary-key-or-unique-constraint" (warning for tables in
# scope without one).  A run's status: "failed takes priority", then
# warning, else passed (DescribeReplicationTaskAssessmentRuns, the DMS
# service model).
def assessment_results(task, names):
    src = ENDPOINTS.get(task.src_arn)
    out = {}
    for name in names:
        status = "passed"
        try:
            if name == "postgres-check-walsenderstimeout" and src:
                ms = int(psql(src, "select setting::bigint * case unit when 's' then 1000 when 'min' then 60000 "
                                   "else 1 end from pg_settings where name = 'wal_sender_timeout'")[0][0])
                status = "passed" if ms == 0 or ms >= 10000 else "failed"
            elif name == "postgres-check-wallevel" and src:
                status = "passed" if psql(src, "show wal_level")[0][0] == "logical" else "failed"
            elif name in ("postgres-check-pk", "table-with-no-primary-key-or-unique-constraint") and src:
                for schema, table in selected_tables(src, task.mappings):
                    has = psql(src, "select exists (select 1 from pg_index where indrelid = '%s.%s'::regclass and "
                                    "indisunique)" % (qident(schema), qident(table)))[0][0]
                    if has != "t":
                        status = "warning"
        except (DbError, subprocess.TimeoutExpired, IndexError) as e:
            log("assessment %s: %s", name, e)
            status = "error"
        out[name] = status
    return out


def assessment_run(spec):
    task = TASKS[spec["ReplicationTaskArn"]]
    task.overlay({})   # creating -> ready once its time has come
    # the task must not be replicating: DMS answers InvalidResourceStateFault
    # (the operation's documented error) and shows the task as "testing"
    # while a run goes on (ReplicationTask.Status in the service model)
    with LOCK:
        if task.status in ("running", "starting", "stopping", "creating", "testing", "modifying"):
            raise ApiError("InvalidResourceStateFault", "Replication task %s is %s: an assessment run needs a task "
                           "that is not running" % (task.id, task.status))
        task.status_before_test = task.status
        task.status = "testing"
    names = spec.get("IncludeOnly") or ["postgres-check-dbversion", "postgres-check-walsenderstimeout",
                                        "postgres-check-wallevel", "postgres-check-pk"]
    arn = "arn:aws:dms:%s:123456789012:assessment-run:%s" % (C.ARGS.region, uuid.uuid4().hex[:20].upper())
    run = {"ReplicationTaskAssessmentRunArn": arn, "ReplicationTaskArn": spec["ReplicationTaskArn"],
           "Status": "starting", "AssessmentRunName": spec.get("AssessmentRunName"),
           "ResultLocationBucket": spec.get("ResultLocationBucket"),
           "ResultLocationFolder": spec.get("ResultLocationFolder"),
           "ReplicationTaskAssessmentRunCreationDate": now_epoch(),
           "AssessmentProgress": {"IndividualAssessmentCount": len(names), "IndividualAssessmentCompletedCount": 0},
           "_t0": now_epoch(), "_final": None}
    ASSESSMENTS[arn] = run
    log("assessment run %s for %s", spec.get("AssessmentRunName"), spec["ReplicationTaskArn"])

    def work():
        results = assessment_results(task, names)
        final = "failed" if "failed" in results.values() or "error" in results.values() else \
            "warning" if "warning" in results.values() else "passed"
        time.sleep(max(0.0, delay("assessment") - (now_epoch() - run["_t0"])))
        # DMS writes the run's reports into the bucket: summary.json (first
        # while running, then final: two versions), one file per check, and
        # a working marker it removes (a delete marker in a versioned bucket)
        bucket = spec.get("ResultLocationBucket")
        if bucket:
            base = "%s/%s/" % (spec.get("ResultLocationFolder") or "assessment-reports", spec.get("AssessmentRunName"))
            s3 = moto_client("s3")
            try:
                s3.put_object(Bucket=bucket, Key=base + ".in-progress", Body=b"")
                s3.put_object(Bucket=bucket, Key=base + "summary.json", Body=json.dumps({"status": "running"}).encode())
                for name, status in results.items():
                    s3.put_object(Bucket=bucket, Key=base + name + ".json",
                                  Body=json.dumps({"name": name, "status": status}).encode())
                s3.put_object(Bucket=bucket, Key=base + "summary.json", Body=json.dumps({"status": final}).encode())
                s3.delete_object(Bucket=bucket, Key=base + ".in-progress")
            except Exception as e:  # noqa: BLE001
                log("assessment reports not written: %s", e)
        with LOCK:
            run["_final"] = final
            if task.status == "testing":
                task.status = task.status_before_test
        log("assessment run %s: %s %s", spec.get("AssessmentRunName"), final, results)
    threading.Thread(target=work, daemon=True).start()
    return run


def assessment_view(run):
    age = now_epoch() - run["_t0"]
    r = {k: v for k, v in run.items() if not k.startswith("_")}
    if run["_final"]:
        r["Status"] = run["_final"]
        r["AssessmentProgress"]["IndividualAssessmentCompletedCount"] = r["AssessmentProgress"]["IndividualAssessmentCount"]
    elif age > delay("assessment") / 3:
        r["Status"] = "running"
    return r


def check_task_settings(text):
    """What DMS rejects in ReplicationTaskSettings (InvalidParameterValueException):
    a document that is not JSON, a TargetTablePrepMode other than
    DO_NOTHING, DROP_AND_CREATE, TRUNCATE_BEFORE_LOAD, MaxFullLoadSubTasks
    outside 1-49, CommitRate above 50000 ("Full-load task settings", DMS
    User Guide).  Keys DMS does not read (a wrong casing, a wrong section)
    are accepted and ignored, as DMS does."""
    if not text:
        return
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise ApiError("InvalidParameterValueException", "Invalid task settings JSON: %s" % e)
    fl = doc.get("FullLoadSettings") or {}
    mode = fl.get("TargetTablePrepMode")
    if mode is not None and mode not in ("DO_NOTHING", "DROP_AND_CREATE", "TRUNCATE_BEFORE_LOAD"):
        raise ApiError("InvalidParameterValueException", "Invalid value '%s' for TargetTablePrepMode" % mode)
    n = fl.get("MaxFullLoadSubTasks")
    if n is not None and not (isinstance(n, int) and 1 <= n <= 49):
        raise ApiError("InvalidParameterValueException", "MaxFullLoadSubTasks must be between 1 and 49")
    n = fl.get("CommitRate")
    if n is not None and not (isinstance(n, int) and 1 <= n <= 50000):
        raise ApiError("InvalidParameterValueException", "CommitRate must be between 1 and 50000")


def throttled(op):
    """<workdir>/throttle.json {"Operation": n}: the next n calls answer
    ThrottlingException ("Rate exceeded"), as a busy account does."""
    path = os.path.join(C.ARGS.workdir, "throttle.json")
    if not os.path.exists(path):
        return
    with LOCK:
        with open(path) as f:
            left = json.load(f)
        if left.get(op, 0) <= 0:
            return
        left[op] -= 1
        with open(path, "w") as f:
            json.dump(left, f)
    raise ApiError("ThrottlingException", "Rate exceeded")


def dms_route(h, op, body):
    req = json.loads(body or b"{}")
    throttled(op)
    if op == "CreateEndpoint":
        res = fwd_json(h, body)
        if res is None:
            return True
        arn = res["Endpoint"]["EndpointArn"]
        mark_fresh(arn, req.get("EndpointIdentifier"))
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
    if op in ("CreateReplicationInstance", "CreateReplicationSubnetGroup"):
        vpc_role_check()
    if op == "CreateReplicationInstance":
        res = fwd_json(h, body)
        if res is None:
            return True
        arn = res["ReplicationInstance"]["ReplicationInstanceArn"]
        instance_created(arn, req["ReplicationInstanceIdentifier"])
        mark_fresh(arn, req["ReplicationInstanceIdentifier"])
        res["ReplicationInstance"]["ReplicationInstanceStatus"] = "creating"
        h._json(res)
        return True
    if op == "CreateReplicationSubnetGroup":
        res = fwd_json(h, body)
        if res is None:
            return True
        mark_fresh(req.get("ReplicationSubnetGroupIdentifier"))
        h._json(res)
        return True
    if op in FILTER_KEYS:
        not_found_if_fresh(op, req)
        if op == "DescribeReplicationInstances":
            res = fwd_json(h, body)
            if res is None:
                return True
            for i in res.get("ReplicationInstances", []):
                instance_overlay(i)
            h._json(res)
            return True
    if op == "TestConnection":
        # answered here entirely (moto 5.2.1 raises on a second test of the
        # same endpoint and filters connections wrongly)
        if consume_fresh([req.get("ReplicationInstanceArn"), req.get("EndpointArn")]):
            raise ApiError("ResourceNotFoundFault", "Endpoint or replication instance could not be found.")
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
        check_task_settings(req.get("ReplicationTaskSettings"))
        res = fwd_json(h, body)
        if res is None:
            return True
        t = res["ReplicationTask"]
        mark_fresh(t["ReplicationTaskArn"], req.get("ReplicationTaskIdentifier"))
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
        if consume_fresh([req.get("ReplicationTaskArn")]):
            raise ApiError("ResourceNotFoundFault", "Replication Task not found")
        task = TASKS.get(req.get("ReplicationTaskArn"))
        if task is None:
            raise ApiError("ResourceNotFoundFault", "Replication task could not be found.")
        kind = req.get("StartReplicationTaskType", "start-replication")
        if kind not in ("start-replication", "resume-processing", "reload-target"):
            raise ApiError("InvalidParameterValueException", "bad StartReplicationTaskType %s" % kind)
        task.start(kind, req.get("CdcStartPosition"))
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


