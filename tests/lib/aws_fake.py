#!/usr/bin/env python3
"""aws_fake.py: a scriptable loopback HTTP server standing in for the
endpoints moto cannot play: EC2 instance metadata (IMDSv2), ECS/EKS
container credentials, an STS AssumeRoleWithWebIdentity endpoint, and
services that fail in controlled ways (5xx, throttling, timeouts, broken
bodies, clock skew).

Usage: aws_fake.py DIR    (runs until killed, 15 minutes at most; writes
                          DIR/port and DIR/pid)

Behaviour comes from DIR/script.json, re-read on every request:
  {"routes": [
     {"method": "PUT", "path": "/latest/api/token",      # method optional
      "match": "Action=AssumeRoleWithWebIdentity",       # optional body substring
      "target": "AmazonDMSv20160101.DescribeEndpoints",  # optional X-Amz-Target
      "require": {"X-aws-ec2-metadata-token": "tok"},    # else 401
      "responses": [                                     # one per request; the last repeats
         {"status": 503, "body": "...", "headers": {...}, "delay": 0.0,
          "close": false, "date_offset": 0}]}]}
A "body" may contain {now+N} (ISO 8601 UTC, N seconds from now).
date_offset sets the Date header N seconds away from now.  "close" drops
the connection without answering.  Unmatched requests get 404.

Every request is appended to DIR/requests.jsonl as
{"method", "path", "headers", "body"}.  Any change to script.json resets
the per-route response counters.
"""
import datetime
import email.utils
import json
import os
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DIR = sys.argv[1]
LOCK = threading.Lock()
STATE = {"text": None, "script": {"routes": []}, "counts": {}}


def load_script():
    try:
        with open(os.path.join(DIR, "script.json")) as f:
            text = f.read()
    except OSError:
        return STATE["script"]
    if text != STATE["text"]:
        STATE["script"] = json.loads(text)
        STATE["text"] = text
        STATE["counts"] = {}
    return STATE["script"]


def expand(body):
    def now_plus(m):
        t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=int(m.group(1)))
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")
    return re.sub(r"\{now([+-]\d+)\}", now_plus, body)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    date_offset = 0

    def log_message(self, fmt, *args):   # quiet: requests.jsonl is the log
        pass

    def date_time_string(self, timestamp=None):   # the Date header, maybe skewed
        return email.utils.formatdate(time.time() + self.date_offset, usegmt=True)

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        path = self.path.split("?")[0]
        with LOCK:
            with open(os.path.join(DIR, "requests.jsonl"), "a") as f:
                f.write(json.dumps({"method": self.command, "path": self.path,
                                    "headers": dict(self.headers.items()), "body": body}) + "\n")
            script = load_script()
            chosen, index = None, None
            for i, r in enumerate(script.get("routes", [])):
                if r.get("method") and r["method"] != self.command:
                    continue
                if r.get("path") and r["path"] != path:
                    continue
                if r.get("match") and r["match"] not in body:
                    continue
                if r.get("target") and r["target"] != self.headers.get("X-Amz-Target"):
                    continue
                chosen, index = r, i
                break
            if chosen is not None:
                n = STATE["counts"].get(index, 0)
                STATE["counts"][index] = n + 1
                responses = chosen.get("responses") or [{"status": 200, "body": ""}]
                resp = responses[min(n, len(responses) - 1)]
        if chosen is None:
            return self.reply({"status": 404, "body": "no route"})
        for k, v in (chosen.get("require") or {}).items():
            if self.headers.get(k) != v:
                return self.reply({"status": 401, "body": "missing or wrong " + k})
        self.reply(resp)

    def reply(self, resp):
        if resp.get("delay"):
            time.sleep(resp["delay"])
        if resp.get("close"):
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        data = expand(resp.get("body", "")).encode()
        self.date_offset = resp.get("date_offset", 0)
        self.send_response(resp.get("status", 200))
        for k, v in (resp.get("headers") or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = handle_any


def main():
    # never outlive a test that died without stopping us
    threading.Timer(900, lambda: os._exit(0)).start()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with open(os.path.join(DIR, "pid"), "w") as f:
        f.write(str(os.getpid()))
    tmp = os.path.join(DIR, "port.tmp")
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(tmp, os.path.join(DIR, "port"))
    server.serve_forever()


if __name__ == "__main__":
    main()
