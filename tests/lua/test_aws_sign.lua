-- test_aws_sign.lua: the Lua surface of the aws module's signer and codecs.
-- aws.sign is compared with botocore on random requests (the same oracle
-- as tests/unit/test_sigv4_botocore.c, through the Lua API this time:
-- header lists with duplicates, bodies, tokens, presigned URLs); then the
-- error objects, the XML reader and the small codecs.
package.path = (os.getenv("PGTIDE_TEST_ROOT") or ".") .. "/tests/lib/?.lua;" .. package.path
local T = require "t"
local aws = require "aws"
local json = require "json"
local sys = require "sys"

local code, out = T.sh("python3 " .. T.q(T.root .. "/tests/lib/sigv4_oracle.py") ..
                       " --count 400")
if out:match('"skip"') then
  T.skip("aws.sign matches botocore", "botocore is not importable")
else
  T.test("aws.sign matches botocore on 400 random requests", function ()
    T.eq(code, 0)
    local n, seed = 0, nil
    for line in out:gmatch("[^\n]+") do
      local c = json.decode(line)
      if c.seed then
        seed = c.seed
      else
        n = n + 1
        local r = aws.sign {
          method = c.method, url = c.url, headers = c.headers,
          body = aws.base64_decode(c.body_b64), service = c.service, region = c.region,
          credentials = { access_key_id = c.access_key_id,
                          secret_access_key = c.secret_access_key,
                          session_token = c.session_token ~= json.null and c.session_token or nil },
          time = c.time, presign = c.presign,
          expires = c.expires ~= json.null and c.expires or nil, s3 = c.s3,
        }
        local what = string.format("case %d (seed %s)", c.id, tostring(seed))
        T.eq(r.canonical_request, c.expect.canonical_request, what .. " canonical request")
        T.eq(r.string_to_sign, c.expect.string_to_sign, what .. " string to sign")
        T.eq(r.signature, c.expect.signature, what .. " signature")
        if c.presign then
          T.eq(r.url, c.expect.url, what .. " url")
          T.eq(r.headers, nil)
        else
          T.eq(r.headers.Authorization, c.expect.authorization, what .. " authorization")
          T.eq(r.headers["X-Amz-Date"], c.expect.x_amz_date, what)
        end
      end
    end
    T.eq(n, 400)
  end)
end

T.test("aws.sign: map headers, default time, presigned S3 URL", function ()
  local cred = { access_key_id = "AKIDEXAMPLE", secret_access_key = "ex-secret",
                 session_token = "tok en" }
  local r = aws.sign { method = "POST", url = "https://dms.us-east-1.amazonaws.com/",
                       headers = { ["X-Amz-Target"] = "AmazonDMSv20160101.DescribeEndpoints",
                                   ["Content-Type"] = "application/x-amz-json-1.1" },
                       body = "{}", service = "dms", region = "us-east-1", credentials = cred }
  T.match(r.canonical_request, "\nx%-amz%-target:AmazonDMSv20160101%.DescribeEndpoints\n")
  T.match(r.canonical_request, "\n44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a$")
  T.eq(r.headers["X-Amz-Security-Token"], "tok en")
  local date = r.headers["X-Amz-Date"]
  local now = os.date("!%Y%m%dT%H%M%SZ")
  T.ok(math.abs(tonumber(date:sub(10, 15)) - tonumber(now:sub(10, 15))) < 100 or
       date:sub(1, 8) ~= now:sub(1, 8), "time defaults to now")
  local p = aws.sign { method = "GET", url = "https://b.s3.amazonaws.com/k%20ey?versionId=3",
                       service = "s3", region = "us-east-1", credentials = cred, s3 = true,
                       presign = true, expires = 600, time = 1767225600 }
  T.match(p.url, "^https://b%.s3%.amazonaws%.com/k%%20ey%?versionId=3&X%-Amz%-Algorithm=")
  T.match(p.url, "X%-Amz%-Expires=600")
  T.match(p.url, "X%-Amz%-Security%-Token=tok%%20en")
  T.match(p.url, "&X%-Amz%-Signature=" .. p.signature .. "$")
  T.match(p.canonical_request, "\nUNSIGNED%-PAYLOAD$")
end)

T.test("aws.sign: misuse raises messages", function ()
  local cred = { access_key_id = "A", secret_access_key = "B" }
  T.raises(function () aws.sign { method = "GET", url = "/x", service = "s", region = "r",
                                  credentials = cred } end, "Host header")
  T.raises(function () aws.sign { method = "GET", url = "http://h/", service = "s",
                                  region = "r" } end, "credentials")
  T.raises(function () aws.sign { method = "GET", url = "http://h/", service = "s", region = "r",
                                  credentials = cred, headers = { X = 5 } } end, "string")
  T.raises(function () aws.sign { method = "GET", url = "nope", service = "s", region = "r",
                                  credentials = cred } end, "URL")
end)

T.test("aws.error objects", function ()
  local e = aws.error { code = "WaiterTimeout", message = "timed out, password=hunter2",
                        service = "dms", operation = "DescribeReplicationTasks" }
  T.ok(aws.is_error(e), "is_error")
  T.eq(aws.is_error({ code = "x" }), false)
  T.eq(aws.is_error("x"), false)
  T.eq(e.retryable, false)
  T.nomatch(tostring(e), "hunter2")
  T.match(tostring(e), "^aws dms%.DescribeReplicationTasks: WaiterTimeout: timed out")
  local ok, err = pcall(error, e)
  T.eq(ok, false)
  T.eq(err, e)
end)

T.test("aws.xml_decode", function ()
  local root = aws.xml_decode("<a xmlns='u'><b>1</b><b>2 &amp; 3</b><c/></a>")
  T.eq(root.name, "a")
  T.eq(#root, 3)
  T.eq(root[2].text, "2 & 3")
  T.eq(root[3].text, "")
  local none, msg = aws.xml_decode("<a><b></a>")
  T.eq(none, nil)
  T.match(msg, "mismatched tag at line 1")
end)

T.test("codecs: time, base64, md5, sha256, uri", function ()
  T.eq(aws.parse_time("2026-01-01T00:00:00Z"), 1767225600)
  T.eq(aws.parse_time("2026-01-01T00:00:00.5Z"), 1767225600.5)
  T.eq(aws.parse_time("Thu, 01 Jan 2026 00:00:00 GMT"), 1767225600)
  T.eq(aws.parse_time("garbage"), nil)
  T.eq(aws.iso8601(1767225600), "2026-01-01T00:00:00Z")
  T.eq(aws.rfc1123(1767225600), "Thu, 01 Jan 2026 00:00:00 GMT")
  T.eq(aws.base64_decode(aws.base64_encode("\0\1\2binary\255")), "\0\1\2binary\255")
  T.eq(aws.base64_decode("!!"), nil)
  T.eq(aws.md5_base64(""), "1B2M2Y8AsgTpgAmY7PhCfg==")
  T.eq(aws.sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
  T.eq(aws.uri_encode("a b/c~é"), "a%20b%2Fc~%C3%A9")
  T.eq(aws.uri_encode("a b/c", true), "a%20b/c")
  T.eq(aws.uri_decode("a%20b%2Fc%zz"), "a b/c%zz")
  T.eq(aws.xml_escape("<a&'\">"), "&lt;a&amp;&apos;&quot;&gt;")
end)

T.test("aws.register_secret masks values in logs and redaction", function ()
  aws.register_secret("Zq9-very-secret-value")
  T.nomatch(sys.redact("x Zq9-very-secret-value y"), "Zq9-very-secret-value")
end)

T.test("sessions: closed sessions refuse use; __tostring", function ()
  local s = aws.session { region = "eu-west-1", credentials = {
    access_key_id = "AKID", secret_access_key = "k" } }
  T.match(tostring(s), "region eu%-west%-1")
  T.eq(s:region(), "eu-west-1")
  s:close()
  s:close()
  T.raises(function () s:region() end, "closed aws session")
end)

T.done()
