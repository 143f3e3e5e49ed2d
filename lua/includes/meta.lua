-- Per-job mutable state in the meta hash: "attempts:token:redrives".
-- attempts counts deliveries since the job was added or last redriven; token is the current
-- lease ("0" when not leased), kept as a string so it compares exactly with ARGV; redrives
-- counts trips from the dead-letter queue back to ready.
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

local function meta_get(value)
  if not value then -- never delivered: the common case on the hot path
    return 0, '0', 0
  end
  local a, t, r = string.match(value, '^(%d+):(%d+):(%d+)$')
  if not a then
    return 0, '0', 0
  end
  return str_to_int[a], t, str_to_int[r]
end

local function meta_put(attempts, token, redrives)
  return int_to_str[attempts] .. ':' .. token .. ':' .. int_to_str[redrives]
end
