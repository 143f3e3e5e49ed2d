--[[
release: give back leased jobs that a worker took but never started (it is shutting down).
They return to the front of ready and the delivery is not counted as an attempt.

KEYS
  1  ready   LIST  ids waiting, FIFO
  2  leased  ZSET  id -> lease deadline (ms)
  3  meta    HASH  id -> "attempts:token:redrives"
  4  wake    LIST  marker that blocked workers wait on
ARGV
  2k-1  id     string   job id (k = 1..N)
  2k    token  integer  its lease token
REPLY
  {0, released, lost_id...}  lost ids were not held under the token given; untouched
ERRORS
  {1, message}  BAD_ARGUMENT; nothing written
]]
-- @include common
-- Reply codes (mirrored by pyqcore.codes.Code; a test keeps the two equal).
local OK, BAD_ARGUMENT, LEASE_LOST, LOCKED = 0, 1, 2, 3
local MAX_INT = 9007199254740991 -- 2^53 - 1: the largest integer a Lua double holds exactly

-- The first argument error found; a script checks it before its first write.
local bad

-- ARGV[i] as an integer within [min, MAX_INT]; records a readable error otherwise.
local function arg_int(i, name, min)
  local s = ARGV[i]
  local v = s and string.match(s, '^%-?%d+$') and tonumber(s)
  if not v or v < min or v > MAX_INT then
    bad = bad or string.format('ARGV[%d] %s must be an integer >= %d, got %q', i, name, min, tostring(s))
    return min
  end
  return v
end

-- ARGV[i] as a lease token: a positive integer of any length, kept as a string (tokens are
-- 62-bit random numbers, beyond what a Lua double holds exactly, and are only compared).
local function arg_token(i, name)
  local s = ARGV[i]
  if not (s and string.match(s, '^[1-9]%d*$')) then
    bad = bad or string.format('ARGV[%d] %s must be a positive integer, got %q', i, name, tostring(s))
    return '0'
  end
  return s
end

-- Calls a variadic command over items in slices, so any count stays under Lua's unpack limit.
local function call_chunked(cmd, key, items) -- no call at all for no items
  for i = 1, #items, 1000 do
    redis.call(cmd, key, unpack(items, i, math.min(i + 999, #items)))
  end
end

-- Leaves one marker on the wake list, so exactly one blocked worker wakes (and rechecks).
local function wake(wake_key)
  if redis.call('LLEN', wake_key) == 0 then
    redis.call('RPUSH', wake_key, '1')
  end
end
-- @end common
-- @include meta
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
-- @end meta

local ready, leased, meta, wake_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if #ARGV < 2 or #ARGV % 2 ~= 0 then
  return {BAD_ARGUMENT, 'ARGV must be (id, token) pairs, at least one'}
end

local ids = {}
for i = 1, #ARGV, 2 do
  ids[#ids + 1] = ARGV[i]
end
local states = redis.call('HMGET', meta, unpack(ids))
local back, reply = {}, {OK, 0}
for i = #ids, 1, -1 do -- newest first, so LPUSH leaves them in their original order
  local attempts, token, redrives = meta_get(states[i])
  if token ~= '0' and token == ARGV[2 * i] then
    redis.call('HSET', meta, ids[i], meta_put(math.max(attempts - 1, 0), '0', redrives))
    back[#back + 1] = ids[i]
  else
    reply[#reply + 1] = ids[i]
  end
end
if #back > 0 then
  call_chunked('ZREM', leased, back)
  call_chunked('LPUSH', ready, back)
  wake(wake_key)
end
reply[2] = #back
return reply
