-- Per-job mutable state in the meta hash: "attempts:token:redrives".
-- attempts counts deliveries since the job was added or last redriven; token is the current
-- lease ("0" when not leased), kept as a string so it compares exactly with ARGV; redrives
-- counts trips from the dead-letter queue back to ready.
local function meta_get(value)
  local a, t, r = string.match(value or '', '^(%d+):(%d+):(%d+)$')
  return tonumber(a) or 0, t or '0', tonumber(r) or 0
end

local function meta_put(attempts, token, redrives)
  return string.format('%d:%s:%d', attempts, token, redrives)
end
