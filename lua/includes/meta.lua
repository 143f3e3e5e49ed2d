-- Per-job delivery history in the meta hash: "attempts:redrives", only for a job that has some.
-- attempts counts the deliveries that ended without an ack (failed, expired) since the job was
-- added or last redriven; redrives counts its trips from the dead-letter queue back to ready.
-- A job on its first delivery has no entry, so reserve and ack write none on the hot path.
-- Number <-> string conversions go through printf/strtod in Lua 5.1; attempts and redrives
-- take few distinct values, so each conversion is done once per script call.
local int_to_str = setmetatable({}, {__index = function(memo, n)
  local s = string.format('%d', n)
  memo[n] = s
  return s
end})
local str_to_int = setmetatable({}, {__index = function(memo, s)
  local n = tonumber(s) or 0
  memo[s] = n
  return n
end})

local function meta_get(value) -- attempts, redrives
  if not value then -- no history: the common case on the hot path
    return 0, 0
  end
  local a, r = string.match(value, '^(%d+):(%d+)$')
  if not a then
    return 0, 0
  end
  return str_to_int[a], str_to_int[r]
end

local function meta_put(attempts, redrives)
  return int_to_str[attempts] .. ':' .. int_to_str[redrives]
end
