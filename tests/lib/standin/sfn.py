"""standin.sfn: a small Step Functions interpreter for the state
machines pgtide deploys (moto does not run them)."""
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
    """Parameters / ResultSelector: a path that is not there is
    States.ParameterPathFailure ("the attempt to replace a field whose name
    ends in .$ using a path failed"), which a Catch can handle."""
    if isinstance(tmpl, dict):
        out = {}
        for k, v in tmpl.items():
            if k.endswith(".$"):
                try:
                    out[k[:-2]] = parse_intrinsic(v, data, ctx) if v.startswith("States.") else get_path(data, v, ctx)
                except StatesError as e:
                    if e.error != "States.Runtime":
                        raise
                    raise StatesError("States.ParameterPathFailure", "The JSONPath '%s' specified for the field "
                                      "'%s' could not be found in the input" % (v, k))
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


# "States.ALL ... A wildcard that matches any known error name.  The
# States.ALL error type ... can't catch the States.DataLimitExceeded terminal
# error and Runtime error types" (Step Functions Developer Guide, "Error
# names"); States.TaskFailed matches any known error name except
# States.Timeout.  Those two are never caught or retried.
UNCATCHABLE = ("States.Runtime", "States.DataLimitExceeded")


def error_matches(names, error):
    if error in UNCATCHABLE:
        return False
    return "States.ALL" in names or error in names or ("States.TaskFailed" in names and error != "States.Timeout")


def sdk_error_name(prefix, client, code):
    """The Error an AWS SDK integration raises for a service error.

    "If an AWS SDK integration encounters an error, the resulting Error
    field is composed of the service name and the error name, separated by
    a period character ... both in Pascal case" and "make sure to add the
    Exception suffix in AWS Step Functions integrations for potential
    error names ... even if the suffix isn't already part of the error
    name the service provides" (Step Functions Developer Guide, "AWS SDK
    service integrations"): DMS's InvalidResourceStateFault is
    DatabaseMigration.InvalidResourceStateFaultException.  An error the
    service model does not list (throttling, EC2's codes: the EC2 model
    lists none) is raised by the SDK as the service's base exception:
    DatabaseMigration.DatabaseMigrationException, Ec2.Ec2Exception.
    """
    modeled = {shape.name for shape in client.meta.service_model.error_shapes}
    if code not in modeled:
        return "%s.%sException" % (prefix, prefix)
    return "%s.%s" % (prefix, code if code.endswith("Exception") else code + "Exception")


EXECUTIONS = {}
SDK_SERVICES = {"databasemigration": ("dms", "DatabaseMigration"), "ec2": ("ec2", "Ec2"), "sns": ("sns", "Sns"),
                "s3": ("s3", "S3")}


def self_client(service):
    """A client for the workflow's service calls, through this stand-in.
    It never retries: a Task state's errors are the workflow's to Retry."""
    key = "self:" + service
    with LOCK:
        if key not in CLIENTS:
            CLIENTS[key] = boto3.client(service, endpoint_url="http://127.0.0.1:%d" % C.ARGS.port,
                                        region_name=C.ARGS.region, aws_access_key_id=KEY_ID,
                                        aws_secret_access_key=SECRET,
                                        config=Config(retries={"total_max_attempts": 1, "mode": "standard"},
                                                      parameter_validation=True))
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
            raise StatesError(sdk_error_name(prefix, client, code),
                              "%s (Service: %s, Status Code: %s, Error Code: %s)" % (
                                  err.get("Message", ""), svc, e.response.get("ResponseMetadata", {}).get("HTTPStatusCode"),
                                  code))
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
            mark_fresh(ex.arn)
            threading.Thread(target=ex.run, daemon=True).start()
            log("execution %s started", name)
            h._json(res)
            return True
        if op == "DescribeExecution":
            if consume_fresh([req.get("executionArn")]):
                raise ApiError("ExecutionDoesNotExist", "Execution Does Not Exist: '%s'" % req.get("executionArn"))
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




SFN = SfnRoute()
