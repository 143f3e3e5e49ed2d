--[[
peek_dead: read dead jobs with everything needed to show them (read-only, one consistent view).

KEYS
  1  dead    ZSET  id -> time it died (ms)
  2  jobs    HASH  id -> serialized job record
  3  meta    HASH  id -> "attempts:redrives" (jobs with a history only)
  4  errors  HASH  id -> last error (JSON)
ARGV
  1    offset  integer  skip this many, oldest first
  2    limit   integer  most jobs returned, >= 1
  3..  id      string   optional: exactly these ids (those not dead are left out)
REPLY
  {0, id1, died_ms1, record1, meta1, error1, ...}  record, meta or error is false if missing
ERRORS
  {1, message}  BAD_ARGUMENT
]]
-- @include codes
-- generated from lua/includes/codes.lua by `make lua`: edit that file, not this block
-- Reply codes (mirrored by pyqcore.codes.Code; a test keeps the two equal).
local OK, BAD_ARGUMENT, LEASE_LOST, LOCKED = 0, 1, 2, 3
-- @end codes
-- @include args
-- generated from lua/includes/args.lua by `make lua`: edit that file, not this block
-- Argument checks. A script reads every ARGV entry it needs first, then returns
-- {BAD_ARGUMENT, bad} before its first write if any was wrong.
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
-- @end args

local dead, jobs, meta, errors = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local offset = arg_int(1, 'offset', 0)
local limit = arg_int(2, 'limit', 1)
if bad then
  return {BAD_ARGUMENT, bad}
end

local ids, died = {}, {}
if #ARGV > 2 then
  for i = 3, #ARGV do
    local score = redis.call('ZSCORE', dead, ARGV[i])
    if score then
      ids[#ids + 1] = ARGV[i]
      died[#died + 1] = score
    end
  end
else
  local flat = redis.call('ZRANGE', dead, offset, offset + limit - 1, 'WITHSCORES')
  for i = 1, #flat, 2 do
    ids[#ids + 1] = flat[i]
    died[#died + 1] = flat[i + 1]
  end
end
local reply = {OK}
if #ids > 0 then
  local records = redis.call('HMGET', jobs, unpack(ids))
  local states = redis.call('HMGET', meta, unpack(ids))
  local errs = redis.call('HMGET', errors, unpack(ids))
  for i, id in ipairs(ids) do
    reply[#reply + 1] = id
    reply[#reply + 1] = tonumber(died[i])
    reply[#reply + 1] = records[i]
    reply[#reply + 1] = states[i]
    reply[#reply + 1] = errs[i]
  end
end
return reply
