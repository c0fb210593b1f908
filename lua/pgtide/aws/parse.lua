-- pgtide.aws.parse: successful HTTP responses to AWS-shaped Lua tables,
-- driven by the service model (botocore's parsers, in short):
--
--   json      the JSON body; timestamps as epoch seconds, blobs decoded,
--             JSON null dropped
--   query     <OpResponse><OpResult>...: the result element parsed with
--             the output shape; lists unwrapped from <member>
--   ec2       <OpResponse>...: the root parsed with the output shape;
--             lists unwrapped from <item>
--   rest-xml  members from headers and the status code, the XML body (or
--             a blob payload as a string)
--
-- Every result carries ResponseMetadata = {RequestId, HTTPStatusCode}.
-- Lists are Lua arrays (empty ones included when present on the wire),
-- timestamps are epoch seconds (numbers), booleans and numbers are typed.
-- A body that cannot be parsed raises aws.error InvalidResponse with a
-- redacted excerpt.  Operations missing from the model get a generic
-- conversion (see generic()).
local aws = require "aws"
local json = require "json"
local model_util = require "pgtide.aws.model"
local util = require "pgtide.util"

local resolve, members = model_util.resolve, model_util.members
local M = {}

local function scalar(shape, s)
  local t = shape.type
  if t == "integer" or t == "long" then
    local n = tonumber(s)
    return n and (math.tointeger(n) or n) or nil
  elseif t == "double" or t == "float" then
    return tonumber(s)
  elseif t == "boolean" then
    return s == "true"
  elseif t == "timestamp" then
    return aws.parse_time(s) or s
  elseif t == "blob" then
    return aws.base64_decode(s) or s
  elseif shape.url_encoded then      -- IAM policy documents
    return aws.uri_decode(s)
  end
  return s
end

---------------------------------------------------------------------------
-- XML
---------------------------------------------------------------------------

local function children_named(node, name)
  local out = {}
  for _, c in ipairs(node) do
    if c.name == name then out[#out + 1] = c end
  end
  return out
end

local function child(node, name)
  for _, c in ipairs(node) do
    if c.name == name then return c end
  end
  return nil
end

local xml_value

-- The element name a structure member is found under.
local function member_key(model, sub, sser, name)
  if sub.type == "list" and sser.flattened then
    local _, mser = resolve(model, sub.member)
    if mser.locationName then return mser.locationName end
  end
  return sser.locationName or name
end

local function xml_structure(model, shape, node)
  local out = {}
  for _, name in ipairs(members(shape)) do
    local sub, sser = resolve(model, shape.members[name])
    if not sser.location then
      local key = member_key(model, sub, sser, name)
      if sser.xmlAttribute then
        -- attributes are not kept by the reader; none of our outputs use them
      elseif sub.type == "list" and sser.flattened then
        local nodes = children_named(node, key)
        if #nodes > 0 then
          local ms = resolve(model, sub.member)
          local list = {}
          for i, n in ipairs(nodes) do list[i] = xml_value(model, ms, n) end
          out[name] = list
        end
      elseif sub.type == "map" and sser.flattened then
        local nodes = children_named(node, key)
        if #nodes > 0 then out[name] = xml_value(model, sub, nodes) end   -- nameless: the entries
      else
        local c = child(node, key)
        if c then out[name] = xml_value(model, sub, c) end
      end
    end
  end
  return out
end

function xml_value(model, shape, node)
  local t = shape.type
  if t == "structure" then
    return xml_structure(model, shape, node)
  elseif t == "list" then
    local ms, mser = resolve(model, shape.member)
    local list = {}
    for _, n in ipairs(children_named(node, mser.locationName or "member")) do
      list[#list + 1] = xml_value(model, ms, n)
    end
    return list
  elseif t == "map" then
    local ks, kser = resolve(model, shape.key)
    local vs, vser = resolve(model, shape.value)
    local entries = node.name and children_named(node, "entry") or node
    local map = {}
    for _, e in ipairs(entries) do
      local k, v = child(e, kser.locationName or "key"), child(e, vser.locationName or "value")
      if k then map[scalar(ks, k.text)] = v and xml_value(model, vs, v) or nil end
    end
    return map
  end
  return scalar(shape, node.text)
end

-- Without a model: leaves are text; an element whose children are all
-- <member> or <item> is a list; repeated children become lists.
local function generic(node)
  if #node == 0 then return node.text end
  local all_items = true
  for _, c in ipairs(node) do
    if c.name ~= "member" and c.name ~= "item" then all_items = false end
  end
  if all_items then
    local list = {}
    for i, c in ipairs(node) do list[i] = generic(c) end
    return list
  end
  local out, counts = {}, {}
  for _, c in ipairs(node) do counts[c.name] = (counts[c.name] or 0) + 1 end
  for _, c in ipairs(node) do
    if counts[c.name] > 1 then
      out[c.name] = out[c.name] or {}
      table.insert(out[c.name], generic(c))
    else
      out[c.name] = generic(c)
    end
  end
  return out
end
M.generic_xml = generic

local function invalid(ctx, what, body)
  local excerpt = body:sub(1, 200):gsub("[%c]", " ")
  error(aws.error { code = "InvalidResponse", service = ctx.service, operation = ctx.operation,
                    status = ctx.status,
                    message = string.format("%s (HTTP %d, %d bytes: %s%s)", what, ctx.status,
                                            #body, excerpt, #body > 200 and "..." or "") }, 0)
end

local function decode_xml(ctx, body)
  local root, err = aws.xml_decode(body)
  if not root then invalid(ctx, "the response is not well-formed XML: " .. err, body) end
  return root
end

---------------------------------------------------------------------------
-- JSON
---------------------------------------------------------------------------

local function json_value(model, shape, v)
  if v == json.null then return nil end
  local t = shape.type
  if shape.document then return v end
  if t == "structure" then
    if type(v) ~= "table" then return v end
    local out = {}
    for name, ref in pairs(shape.members) do
      local sub, sser = resolve(model, ref)
      local x = v[sser.locationName or name]
      if x ~= nil then out[name] = json_value(model, sub, x) end
    end
    return out
  elseif t == "list" then
    if type(v) ~= "table" then return v end
    local ms = resolve(model, shape.member)
    local out = {}
    for i, x in ipairs(v) do out[i] = json_value(model, ms, x) end
    return out
  elseif t == "map" then
    if type(v) ~= "table" then return v end
    local vs = resolve(model, shape.value)
    local out = {}
    for k, x in pairs(v) do out[k] = json_value(model, vs, x) end
    return out
  elseif t == "timestamp" then
    if type(v) == "string" then return aws.parse_time(v) or v end
    return v
  elseif t == "blob" then
    return type(v) == "string" and (aws.base64_decode(v) or v) or v
  end
  return v
end


---------------------------------------------------------------------------

-- ctx: {service, operation, status, headers (lowercase names)}
function M.response(model, op, ctx, body)
  local protocol = model.metadata.protocol
  local out_shape = op and op.output and model.shapes[op.output]
  local result, request_id
  if protocol == "json" then
    local doc = {}
    if body:find("%S") then
      local ok, v = pcall(json.decode, body)
      if not ok or type(v) ~= "table" then
        invalid(ctx, "the response is not a JSON object", body)
      end
      doc = v
    end
    result = out_shape and json_value(model, out_shape, doc) or util.plain(doc)
    request_id = ctx.headers["x-amzn-requestid"]
  elseif protocol == "query" or protocol == "ec2" then
    local root = decode_xml(ctx, body)
    local node = root
    if protocol == "query" and op and op.result_wrapper then
      node = child(root, op.result_wrapper) or { name = op.result_wrapper, text = "" }
    elseif protocol == "query" and not op then
      node = child(root, ctx.operation .. "Result") or root
    end
    if out_shape then
      result = xml_structure(model, out_shape, node)
    elseif op then
      result = {}
    else
      result = generic(node)
      if type(result) ~= "table" then result = {} end
      result.ResponseMetadata, result.requestId = nil, nil
    end
    local meta = child(root, "ResponseMetadata")
    local rid = (meta and child(meta, "RequestId")) or child(root, "requestId") or
                child(root, "RequestId")
    request_id = rid and rid.text or ctx.headers["x-amzn-requestid"]
  elseif protocol == "rest-xml" then
    result = {}
    local payload_done = false
    if out_shape then
      for _, name in ipairs(members(out_shape)) do
        local sub, sser = resolve(model, out_shape.members[name])
        if sser.location == "header" then
          local v = ctx.headers[(sser.locationName or name):lower()]
          if v ~= nil then
            if sub.type == "list" then
              local ms = resolve(model, sub.member)
              local list = {}
              for item in v:gmatch("[^,]+") do list[#list + 1] = scalar(ms, item:match("^%s*(.-)%s*$")) end
              result[name] = list
            else
              result[name] = scalar(sub, v)
            end
          end
        elseif sser.location == "headers" then
          local prefix = (sser.locationName or ""):lower()
          local map
          for k, v in pairs(ctx.headers) do
            if k:sub(1, #prefix) == prefix then
              map = map or {}
              map[k:sub(#prefix + 1)] = v
            end
          end
          result[name] = map
        elseif sser.location == "statusCode" then
          result[name] = ctx.status
        end
      end
      if out_shape.payload then
        local sub = resolve(model, out_shape.members[out_shape.payload])
        payload_done = true
        if sub.type == "blob" or sub.type == "string" then
          result[out_shape.payload] = body
        elseif body:find("%S") then
          result[out_shape.payload] = xml_value(model, sub, decode_xml(ctx, body))
        end
      end
    end
    if not payload_done and body:find("%S") then
      local root = decode_xml(ctx, body)
      if out_shape then
        for k, v in pairs(xml_structure(model, out_shape, root)) do result[k] = v end
      else
        result = generic(root)
      end
    end
    request_id = ctx.headers["x-amz-request-id"]
  else
    error("unsupported protocol " .. tostring(protocol))
  end
  if type(result) ~= "table" then result = {} end
  result.ResponseMetadata = { RequestId = request_id, HTTPStatusCode = ctx.status }
  return result
end

return M
