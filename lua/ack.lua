--[[
ack: finish N leased jobs. A job is removed only when the token given is its current lease:
a worker whose lease expired (and whose job was reclaimed) changes nothing.

KEYS
  1  leased  ZSET  id -> lease deadline (ms)
  2  jobs    HASH  id -> serialized job record
  3  meta    HASH  id -> "attempts:token:redrives"
  4  errors  HASH  id -> last error (JSON)
  5  stats   HASH  counters
ARGV
  2k-1  id     string   job id (k = 1..N)
  2k    token  integer  the lease token that reserve returned with it
REPLY
  {0, acked, refused_id...}  acked = how many jobs were removed; refused ids follow
ERRORS
  {1, message}  BAD_ARGUMENT: empty or odd id/token list; nothing written
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

local leased, jobs, meta, errors, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if #ARGV < 2 or #ARGV % 2 ~= 0 then
  return {BAD_ARGUMENT, 'ARGV must be (id, token) pairs, at least one'}
end

local ids = {}
for i = 1, #ARGV / 2 do
  ids[i] = ARGV[2 * i - 1]
end
local states = redis.call('HMGET', meta, unpack(ids))
local done, erred, reply, n = {}, {}, {OK, 0}, 0
for i, id in ipairs(ids) do
  local attempts, token, redrives = meta_get(states[i])
  if token ~= '0' and token == ARGV[2 * i] then
    n = n + 1
    done[n] = id
    if attempts > 1 or redrives > 0 then -- only a job that failed before has an error
      erred[#erred + 1] = id
    end
  else
    reply[#reply + 1] = id
  end
end
if #done > 0 then
  call_chunked('ZREM', leased, done)
  call_chunked('HDEL', jobs, done)
  call_chunked('HDEL', meta, done)
  call_chunked('HDEL', errors, erred)
  redis.call('HINCRBY', stats, 'completed', #done)
end
reply[2] = #done
return reply
