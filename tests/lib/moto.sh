#!/usr/bin/env bash
# moto.sh: a local moto_server with SigV4 signature checking, for tests.
#
#   moto.sh start DIR   start moto on a free 127.0.0.1 port (with the AWS managed
#                       IAM policies loaded, so they can be attached), bootstrap an IAM
#                       user with an allow-all policy and an access key (the
#                       first INITIAL_NO_AUTH_ACTION_COUNT=3 actions are
#                       unauthenticated; every later request must be signed
#                       with that key), then print one line:
#                         endpoint=http://127.0.0.1:PORT access_key_id=AKIA...
#                       The key pair is written to DIR/credentials (profile
#                       "default", AWS shared credentials format): the secret is
#                       never printed, and files named "credentials" are
#                       excluded from the suite's log scans.
#   moto.sh stop DIR    stop it (and remove nothing else).
#
# Exits 3 when moto_server is not installed (callers skip their tests).
set -u
cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: moto.sh start|stop DIR" >&2; exit 2; }

case "$cmd" in
start)
  command -v moto_server >/dev/null 2>&1 || { echo "moto_server not found" >&2; exit 3; }
  mkdir -p "$dir"
  for try in 1 2 3; do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    # 'timeout' bounds its life should the test that started it die
    INITIAL_NO_AUTH_ACTION_COUNT=3 MOTO_ALLOW_NONEXISTENT_REGION=true MOTO_IAM_LOAD_MANAGED_POLICIES=true \
      setsid timeout 1200 moto_server -H 127.0.0.1 -p "$port" >"$dir/moto.log" 2>&1 </dev/null &
    echo $! > "$dir/moto.pid"
    # wait (at most 30 s) for the port to accept connections
    for _ in $(seq 1 300); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then ready=1; break; fi
      kill -0 "$(cat "$dir/moto.pid")" 2>/dev/null || break
      sleep 0.1
    done
    [ "${ready:-0}" = 1 ] && break
    kill "$(cat "$dir/moto.pid")" 2>/dev/null
  done
  [ "${ready:-0}" = 1 ] || { echo "moto_server did not start:" >&2; tail -5 "$dir/moto.log" >&2; exit 1; }
  echo "http://127.0.0.1:$port" > "$dir/endpoint"
  # bootstrap: 3 unauthenticated IAM actions, then the key is mandatory
  MOTO_ENDPOINT="http://127.0.0.1:$port" MOTO_DIR="$dir" python3 - <<'EOF' || exit 1
import os, sys
import botocore.session
s = botocore.session.get_session()
iam = s.create_client("iam", region_name="us-east-1", endpoint_url=os.environ["MOTO_ENDPOINT"],
                      aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
iam.create_user(UserName="pgtide-test")
iam.put_user_policy(UserName="pgtide-test", PolicyName="all",
                    PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}')
key = iam.create_access_key(UserName="pgtide-test")["AccessKey"]
path = os.path.join(os.environ["MOTO_DIR"], "credentials")
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    f.write("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n"
            % (key["AccessKeyId"], key["SecretAccessKey"]))
print("endpoint=%s access_key_id=%s" % (os.environ["MOTO_ENDPOINT"], key["AccessKeyId"]))
EOF
  ;;
stop)
  if [ -f "$dir/moto.pid" ]; then
    pid=$(cat "$dir/moto.pid")
    # moto keeps nothing worth a graceful shutdown: its process group
    # (timeout and moto_server) goes at once
    kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null
    rm -f "$dir/moto.pid"
  fi
  ;;
*)
  echo "usage: moto.sh start|stop DIR" >&2; exit 2 ;;
esac
