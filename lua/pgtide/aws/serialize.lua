-- pgtide.aws.serialize: operation inputs (AWS-shaped Lua tables) to HTTP
-- requests, for the four wire protocols, driven by the service model:
--
--   json      POST /, X-Amz-Target, body = JSON of the input (JSON 1.0/1.1)
--   query     POST /, form body Action=Op&Version=...; lists as Name.member.N
--             (Name.N when flattened), maps as Name.entry.N.key/value
--   ec2       like query, but lists are always Name.N and names come from
--             queryName or the capitalised locationName
--   rest-xml  S3: method and URI template, members bound to the path,
--             query string and headers, an XML or blob payload; Content-MD5
--             where the model requires a checksum
--
-- Inputs are validated first, as botocore does (unknown members, missing
-- required members, wrong types): an aws.error ParamValidation lists every
-- problem.  Values of shapes marked sensitive are registered for redaction.
-- Operations missing from the model are serialised generically from the
-- table's shape (json, query, ec2 only).
local aws = require "aws"
local json = require "json"
local model_util = require "pgtide.aws.model"

local resolve, members = model_util.resolve, model_util.members
local M = {}

---------------------------------------------------------------------------
-- Validation
---------------------------------------------------------------------------

local function describe(v)
  local t = type(v)
  if t == "number" then return math.type(v) end
  return t
end

local function validate(model, shape, value, path, problems, depth)
  if depth > 40 then problems[#problems + 1] = path .. ": nested too deeply"; return end
  local t = shape.type
  if t == "structure" then
    if type(value) ~= "table" then
      problems[#problems + 1] = string.format("%s: expected a table (structure), got %s",
                                              path, describe(value))
      return
    end
    if shape.document then return end
    for k, v in pairs(value) do
      local ref = type(k) == "string" and shape.members[k]
      if not ref then
        problems[#problems + 1] = string.format("%s: unknown parameter %s",
                                                path == "" and "input" or path, tostring(k))
      else
        local sub = resolve(model, ref)
        validate(model, sub, v, path == "" and k or (path .. "." .. k), problems, depth + 1)
      end
    end
    for _, k in ipairs(shape.required or {}) do
      if value[k] == nil then
        problems[#problems + 1] = string.format("%s: missing required parameter %s",
                                                path == "" and "input" or path, k)
      end
    end
  elseif t == "list" then
    if type(value) ~= "table" or not model_util.is_array(value) then
      problems[#problems + 1] = string.format("%s: expected a list, got %s", path,
                                              describe(value))
      return
    end
    local sub = resolve(model, shape.member)
    for i, v in ipairs(value) do
      validate(model, sub, v, path .. "[" .. i .. "]", problems, depth + 1)
    end
  elseif t == "map" then
    if type(value) ~= "table" then
      problems[#problems + 1] = string.format("%s: expected a table (map), got %s", path,
                                              describe(value))
      return
    end
    local vs = resolve(model, shape.value)
    for k, v in pairs(value) do
      if type(k) ~= "string" then
        problems[#problems + 1] = string.format("%s: map keys must be strings", path)
      else
        validate(model, vs, v, path .. "." .. k, problems, depth + 1)
      end
    end
  elseif t == "string" then
    if type(value) ~= "string" then
      problems[#problems + 1] = string.format("%s: expected a string, got %s", path,
                                              describe(value))
    elseif shape.sensitive then
      aws.register_secret(value)
    end
  elseif t == "integer" or t == "long" then
    if math.type(value) ~= "integer" and
       not (math.type(value) == "float" and math.tointeger(value)) then
      problems[#problems + 1] = string.format("%s: expected an integer, got %s", path,
                                              describe(value))
    end
  elseif t == "double" or t == "float" then
    if type(value) ~= "number" then
      problems[#problems + 1] = string.format("%s: expected a number, got %s", path,
                                              describe(value))
    end
  elseif t == "boolean" then
    if type(value) ~= "boolean" then
      problems[#problems + 1] = string.format("%s: expected a boolean, got %s", path,
                                              describe(value))
    end
  elseif t == "timestamp" then
    if type(value) ~= "number" and not (type(value) == "string" and aws.parse_time(value)) then
      problems[#problems + 1] = string.format("%s: expected a timestamp (epoch seconds or " ..
                                              "ISO 8601), got %s", path, describe(value))
    end
  elseif t == "blob" then
    if type(value) ~= "string" then
      problems[#problems + 1] = string.format("%s: expected a string (blob), got %s", path,
                                              describe(value))
    end
  end
end

-- Raise ParamValidation when 'params' does not fit the operation's input.
function M.validate(model, service, opname, shape_name, params)
  if not shape_name then
    if next(params) ~= nil then
      error(aws.error { code = "ParamValidation", service = service, operation = opname,
                        message = "this operation takes no parameters" }, 0)
    end
    return
  end
  local problems = {}
  validate(model, model.shapes[shape_name], params, "", problems, 0)
  if #problems > 0 then
    table.sort(problems)
    error(aws.error { code = "ParamValidation", service = service, operation = opname,
                      message = "invalid parameters: " .. table.concat(problems, "; ") }, 0)
  end
end

---------------------------------------------------------------------------
-- Scalars
---------------------------------------------------------------------------

local function epoch(v)
  if type(v) == "number" then return v end
  return aws.parse_time(v)
end

local function timestamp(v, format, default)
  format = format or default
  local t = epoch(v)
  if format == "unixTimestamp" then return t end
  if format == "rfc822" then return aws.rfc1123(t) end
  return aws.iso8601(t)
end

-- Text form of a scalar for query strings, headers and XML.
local function text(shape, ser, v, ts_default)
  local t = shape.type
  if t == "boolean" then return v and "true" or "false" end
  if t == "timestamp" then return tostring(timestamp(v, ser.timestampFormat, ts_default)) end
  if t == "blob" then return aws.base64_encode(v) end
  if (t == "integer" or t == "long") and math.type(v) == "float" then
    return tostring(math.tointeger(v))
  end
  if ser.jsonvalue and type(v) ~= "string" then return aws.base64_encode(json.encode(v)) end
  return tostring(v)
end

-- application/x-www-form-urlencoded as botocore sends it (Python's
-- urlencode): RFC 3986 unreserved characters kept, space as '+', the rest
-- %XX.  moto recomputes signatures over exactly this encoding.
local function form_encode(pairs_list)
  local parts = {}
  for _, kv in ipairs(pairs_list) do
    parts[#parts + 1] = aws.uri_encode(kv[1]):gsub("%%20", "+") .. "=" ..
                        aws.uri_encode(kv[2]):gsub("%%20", "+")
  end
  return table.concat(parts, "&")
end

-- Query strings (REST-XML): %20 for spaces, as botocore's percent_encode.
local function query_encode(pairs_list)
  local parts = {}
  for _, kv in ipairs(pairs_list) do
    parts[#parts + 1] = aws.uri_encode(kv[1]) .. "=" .. aws.uri_encode(kv[2])
  end
  return table.concat(parts, "&")
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function (a, b) return tostring(a) < tostring(b) end)
  return keys
end

---------------------------------------------------------------------------
-- JSON 1.0 / 1.1
---------------------------------------------------------------------------

local function json_value(model, shape, ser, v)
  local t = shape.type
  if shape.document then return v end
  if t == "structure" then
    local out = {}
    for name, ref in pairs(shape.members) do
      if v[name] ~= nil then
        local sub, sser = resolve(model, ref)
        out[sser.locationName or name] = json_value(model, sub, sser, v[name])
      end
    end
    return out
  elseif t == "list" then
    local out = json.array {}
    local sub, sser = resolve(model, shape.member)
    for i, x in ipairs(v) do out[i] = json_value(model, sub, sser, x) end
    return out
  elseif t == "map" then
    local out = {}
    local sub, sser = resolve(model, shape.value)
    for k, x in pairs(v) do out[k] = json_value(model, sub, sser, x) end
    return out
  elseif t == "timestamp" then
    return timestamp(v, ser.timestampFormat, "unixTimestamp")
  elseif t == "blob" then
    return aws.base64_encode(v)
  elseif (t == "integer" or t == "long") and math.type(v) == "float" then
    return math.tointeger(v)
  end
  return v
end

-- Generic JSON for operations missing from the model: arrays stay arrays.
local function json_generic(v)
  if type(v) ~= "table" then return v end
  local out = model_util.is_array(v) and next(v) ~= nil and json.array {} or {}
  for k, x in pairs(v) do out[k] = json_generic(x) end
  return out
end

local function serialize_json(model, opname, op, params)
  local meta = model.metadata
  local body
  if op then
    body = op.input and json_value(model, model.shapes[op.input], {}, params) or {}
  else
    body = json_generic(params)
  end
  return {
    method = "POST", path = "/",
    headers = {
      ["Content-Type"] = "application/x-amz-json-" .. (meta.json_version or "1.0"),
      ["X-Amz-Target"] = meta.target_prefix .. "." .. opname,
    },
    body = json.encode(body),
  }
end

---------------------------------------------------------------------------
-- Query and EC2
---------------------------------------------------------------------------

local function capitalised(s) return s:sub(1, 1):upper() .. s:sub(2) end

local function query_name(ec2, ser, default)
  if ec2 then
    if ser.queryName then return ser.queryName end
    if ser.locationName then return capitalised(ser.locationName) end
    return default
  end
  return ser.locationName or default
end

local function query_value(model, ec2, out, shape, ser, v, prefix)
  local t = shape.type
  if t == "structure" then
    for _, name in ipairs(members(shape)) do
      if v[name] ~= nil then
        local sub, sser = resolve(model, shape.members[name])
        local n = query_name(ec2, sser, name)
        query_value(model, ec2, out, sub, sser, v[name], prefix == "" and n or (prefix .. "." .. n))
      end
    end
  elseif t == "list" then
    local sub, sser = resolve(model, shape.member)
    local list_prefix
    if ec2 then
      list_prefix = prefix
    else
      if #v == 0 then out[#out + 1] = { prefix, "" }; return end
      if ser.flattened then
        list_prefix = prefix
        if sser.locationName then             -- replace the last component
          list_prefix = prefix:gsub("[^.]+$", sser.locationName)
        end
      else
        list_prefix = prefix .. "." .. (sser.locationName or "member")
      end
    end
    for i, x in ipairs(v) do
      query_value(model, ec2, out, sub, sser, x, list_prefix .. "." .. i)
    end
  elseif t == "map" then
    local full = ser.flattened and prefix or (prefix .. ".entry")
    local ks, kser = resolve(model, shape.key)
    local vs, vser = resolve(model, shape.value)
    local kname = query_name(ec2, kser, "key")
    local vname = query_name(ec2, vser, "value")
    for i, k in ipairs(sorted_keys(v)) do
      query_value(model, ec2, out, ks, kser, k, full .. "." .. i .. "." .. kname)
      query_value(model, ec2, out, vs, vser, v[k], full .. "." .. i .. "." .. vname)
    end
  else
    out[#out + 1] = { prefix, text(shape, ser, v, "iso8601") }
  end
end

-- Generic query form for operations missing from the model.
local function query_generic(ec2, out, v, prefix)
  if type(v) ~= "table" then
    local s = type(v) == "boolean" and (v and "true" or "false") or tostring(v)
    out[#out + 1] = { prefix, s }
  elseif model_util.is_array(v) and next(v) ~= nil then
    for i, x in ipairs(v) do
      query_generic(ec2, out, x, prefix .. (ec2 and "." or ".member.") .. i)
    end
  else
    for _, k in ipairs(sorted_keys(v)) do
      query_generic(ec2, out, v[k], prefix == "" and k or (prefix .. "." .. k))
    end
  end
end

local function serialize_query(model, opname, op, params, ec2)
  local form = { { "Action", opname }, { "Version", model.metadata.api_version } }
  if op then
    if op.input then query_value(model, ec2, form, model.shapes[op.input], {}, params, "") end
  else
    query_generic(ec2, form, params, "")
  end
  return {
    method = "POST", path = "/",
    headers = { ["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8" },
    body = form_encode(form),
  }
end

---------------------------------------------------------------------------
-- REST-XML (S3)
---------------------------------------------------------------------------

local function xml_value(model, shape, ser, v, name, out)
  local t = shape.type
  if t == "structure" then
    local attrs, body = {}, {}
    for _, mname in ipairs(members(shape)) do
      if v[mname] ~= nil then
        local sub, sser = resolve(model, shape.members[mname])
        local n = sser.locationName or mname
        if sser.xmlAttribute then
          attrs[#attrs + 1] = string.format(' %s="%s"', n,
                                            aws.xml_escape(text(sub, sser, v[mname])))
        else
          xml_value(model, sub, sser, v[mname], n, body)
        end
      end
    end
    local ns = ser.xmlNamespace and string.format(' xmlns="%s"', ser.xmlNamespace) or ""
    out[#out + 1] = "<" .. name .. ns .. table.concat(attrs) .. ">" .. table.concat(body) ..
                    "</" .. name .. ">"
  elseif t == "list" then
    local sub, sser = resolve(model, shape.member)
    if ser.flattened then
      for _, x in ipairs(v) do xml_value(model, sub, sser, x, name, out) end
    else
      local inner = {}
      for _, x in ipairs(v) do
        xml_value(model, sub, sser, x, sser.locationName or "member", inner)
      end
      out[#out + 1] = "<" .. name .. ">" .. table.concat(inner) .. "</" .. name .. ">"
    end
  elseif t == "map" then
    local ks, kser = resolve(model, shape.key)
    local vs, vser = resolve(model, shape.value)
    local entries = {}
    for _, k in ipairs(sorted_keys(v)) do
      local e = {}
      xml_value(model, ks, kser, k, kser.locationName or "key", e)
      xml_value(model, vs, vser, v[k], vser.locationName or "value", e)
      entries[#entries + 1] = (ser.flattened and "<" .. name .. ">" or "<entry>") ..
                              table.concat(e) .. (ser.flattened and "</" .. name .. ">" or "</entry>")
    end
    out[#out + 1] = ser.flattened and table.concat(entries)
                    or ("<" .. name .. ">" .. table.concat(entries) .. "</" .. name .. ">")
  else
    out[#out + 1] = "<" .. name .. ">" .. aws.xml_escape(text(shape, ser, v, "iso8601")) ..
                    "</" .. name .. ">"
  end
end

-- Fill "{Name}" / "{Name+}" in the request URI.
local function render_uri(template, uri_params)
  return (template:gsub("{([%w_]+)(%+?)}", function (name, greedy)
    local v = uri_params[name]
    if v == nil then error("missing URI parameter " .. name) end
    return aws.uri_encode(v, greedy == "+")
  end))
end

local function serialize_rest_xml(model, opname, op, params)
  if not op then error("operation " .. opname .. " is not in pgtide's S3 model") end
  local input = op.input and model.shapes[op.input] or { members = {} }
  local uri_params, query, headers, body_members = {}, {}, {}, {}
  local content_type
  for _, name in ipairs(members(input)) do
    local v = params[name]
    if v ~= nil then
      local sub, ser = resolve(model, input.members[name])
      local loc, lname = ser.location, ser.locationName or name
      if loc == "uri" then
        uri_params[lname] = text(sub, ser, v, "iso8601")
      elseif loc == "querystring" then
        if sub.type == "list" then
          local ms, mser = resolve(model, sub.member)
          for _, x in ipairs(v) do query[#query + 1] = { lname, text(ms, mser, x, "iso8601") } end
        elseif sub.type == "map" then
          for _, k in ipairs(sorted_keys(v)) do query[#query + 1] = { k, tostring(v[k]) } end
        else
          query[#query + 1] = { lname, text(sub, ser, v, "iso8601") }
        end
      elseif loc == "header" then
        if sub.type == "list" then
          local ms, mser = resolve(model, sub.member)
          local parts = {}
          for i, x in ipairs(v) do parts[i] = text(ms, mser, x, "rfc822") end
          headers[lname] = table.concat(parts, ",")
        else
          headers[lname] = text(sub, ser, v, "rfc822")
        end
        if lname:lower() == "content-type" then content_type = headers[lname] end
      elseif loc == "headers" then
        for _, k in ipairs(sorted_keys(v)) do headers[lname .. k] = tostring(v[k]) end
      elseif loc ~= "statusCode" then
        body_members[name] = true
      end
    end
  end
  local body
  if input.payload then
    local name = input.payload
    local v = params[name]
    if v ~= nil then
      local sub, ser = resolve(model, input.members[name])
      if sub.type == "blob" or sub.type == "string" then
        body = v
        if not content_type then headers["Content-Type"] = "application/octet-stream" end
      else
        local out = {}
        xml_value(model, sub, ser, v, ser.locationName or input.members[name].shape, out)
        body = table.concat(out)
        if not content_type then headers["Content-Type"] = "application/xml" end
      end
    end
  elseif next(body_members) then
    local out = {}
    local root = { type = "structure", members = {} }
    for name in pairs(body_members) do root.members[name] = input.members[name] end
    xml_value(model, root, { xmlNamespace = op.input_xml_namespace }, params,
              op.input_location_name or op.input, out)
    body = table.concat(out)
    if not content_type then headers["Content-Type"] = "application/xml" end
  end
  if op.checksum_required then
    local given = false
    for k in pairs(headers) do if k:lower() == "content-md5" then given = true end end
    if not given then headers["Content-MD5"] = aws.md5_base64(body or "") end
  end
  local path = render_uri(op.uri, uri_params)
  if #query > 0 then
    path = path .. (path:find("?", 1, true) and "&" or "?") .. query_encode(query)
  end
  return { method = op.method, path = path, headers = headers, body = body,
           bucket = uri_params.Bucket }
end

---------------------------------------------------------------------------

-- Build {method, path (with query), headers, body[, bucket]} for an
-- operation; 'op' is nil for operations missing from the model.
function M.request(model, opname, op, params)
  local protocol = model.metadata.protocol
  if protocol == "json" then return serialize_json(model, opname, op, params) end
  if protocol == "query" then return serialize_query(model, opname, op, params, false) end
  if protocol == "ec2" then return serialize_query(model, opname, op, params, true) end
  if protocol == "rest-xml" then return serialize_rest_xml(model, opname, op, params) end
  error("unsupported protocol " .. tostring(protocol))
end

return M
