-- pgtide.aws.model: loading the generated service models
-- (lua/pgtide/aws/model/<service>.lua) and resolving member references.
--
-- A member reference ({shape = "X", locationName = ..., flattened = ...})
-- and the shape it names are merged the way botocore does: the traits on
-- the reference override those of the shape.  resolve() returns the shape
-- table and that merged view ("ser": locationName, queryName, flattened,
-- xmlNamespace, location, timestampFormat, xmlAttribute, jsonvalue).
local M = {}

-- Client names, with the aliases users are likely to type.
M.aliases = {
  dms = "dms", cloudformation = "cloudformation", sns = "sns", s3 = "s3", ec2 = "ec2",
  iam = "iam", sts = "sts", cloudwatch = "cloudwatch", monitoring = "cloudwatch",
  stepfunctions = "stepfunctions", sfn = "stepfunctions", states = "stepfunctions",
}

local cache = {}

---@param service string  client name or alias ("dms", "sfn", ...)
---@return table model, string canonical name
function M.load(service)
  local name = M.aliases[service]
  if not name then
    local known = {}
    for k in pairs(M.aliases) do known[#known + 1] = k end
    table.sort(known)
    error(string.format("unknown AWS service '%s' (known: %s)", tostring(service),
                        table.concat(known, ", ")), 3)
  end
  if not cache[name] then
    cache[name] = require("pgtide.aws.model." .. name)
  end
  return cache[name], name
end

local SER_KEYS = { "locationName", "queryName", "flattened", "xmlNamespace", "location",
                   "timestampFormat", "xmlAttribute", "jsonvalue" }

-- Merge a reference's traits over its shape's.
function M.resolve(model, ref)
  local shape = model.shapes[ref.shape]
  if not shape then error("model has no shape " .. tostring(ref.shape)) end
  local ser = {}
  for _, k in ipairs(SER_KEYS) do
    if ref[k] ~= nil then ser[k] = ref[k] elseif shape[k] ~= nil then ser[k] = shape[k] end
  end
  return shape, ser
end

-- Members of a structure in a stable order (sorted names).
function M.members(shape)
  local names = {}
  for k in pairs(shape.members or {}) do names[#names + 1] = k end
  table.sort(names)
  return names
end

-- Is t an array (keys 1..n)?  An empty table counts as one.
function M.is_array(t)
  if type(t) ~= "table" then return false end
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n == #t
end

return M
