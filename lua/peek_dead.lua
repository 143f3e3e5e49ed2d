--[[
peek_dead: read dead jobs with everything needed to show them (read-only, one consistent view).

KEYS
  1  dead    ZSET  id -> time it died (ms)
  2  jobs    HASH  id -> serialized job record
  3  meta    HASH  id -> "attempts:redrives[:limit]" (jobs with a history or their own limit)
  4  errors  HASH  id -> last error (JSON)
ARGV
  1    offset  integer  skip this many, oldest first
  2    limit   integer  most jobs returned, >= 1 (the caller's bound: the reads go in slices of
                        1000, so any limit fits under Lua's unpack limit)
  3..  id      string   optional: exactly these ids (those not dead are left out; offset and
                        limit are checked, then ignored)
REPLY
  {0, id1, died_ms1, record1, meta1, error1, ...}  oldest first (or in the order of the ids
  given); record, meta or error is false if missing
ERRORS
  {1, message}  BAD_ARGUMENT
]]
-- @include codes
-- generated from lua/includes/codes.lua by `make lua`: edit that file, not this block
-- Reply codes (mirrored by pyqcore.codes.Code; a test keeps the two equal).
local OK, BAD_ARGUMENT, LEASE_LOST, LOCKED, QUEUE_FULL = 0, 1, 2, 3, 4
-- @end codes
-- @include args
-- generated from lua/includes/args.lua by `make lua`: edit that file, not this block
-- Argument checks. A script reads every ARGV entry it needs first, then returns
-- {BAD_ARGUMENT, bad} before its first write if any was wrong.
local MAX_INT = 9007199254740991 -- 2^53 - 1: the largest integer a Lua double holds exactly

-- The first argument error found; a script checks it before its first write.
local bad

-- ARGV[i] as an integer within [min, max] (max defaults to MAX_INT), written as Redis writes
-- one ("0", "-1", "42": no sign, space or leading zero), since scripts hand the text on to
-- Redis commands, which refuse "007" and "-0" after earlier writes; a missing entry is an
-- error. Records a readable error otherwise.
local function arg_int(i, name, min, max)
  max = max or MAX_INT
  local s = ARGV[i]
  local v = s and (s == '0' or string.match(s, '^%-?[1-9]%d*$')) and tonumber(s)
  if not v or v < min or v > max then
    if max == MAX_INT then
      bad = bad or string.format('ARGV[%d] %s must be an integer >= %d, got %q', i, name, min, tostring(s))
    else
      bad = bad or string.format('ARGV[%d] %s must be an integer in [%d, %d], got %q', i, name, min, max, tostring(s))
    end
    return min
  end
  return v
end
-- @end args
-- @include gather_chunked
-- generated from lua/includes/gather_chunked.lua by `make lua`: edit that file, not this block
-- For a command that answers per item (HMGET, ZMSCORE): calls it over items in slices of 1000,
-- under Lua's unpack limit (about 8000 values in Redis's Lua 5.1), and joins the replies.
local function gather_chunked(cmd, key, items)
  if #items <= 1000 then
    return #items > 0 and redis.call(cmd, key, unpack(items)) or {}
  end
  local all, n = {}, 0
  for i = 1, #items, 1000 do
    local part = redis.call(cmd, key, unpack(items, i, math.min(i + 999, #items)))
    for j = 1, #part do
      all[n + j] = part[j]
    end
    n = n + #part
  end
  return all
end
-- @end gather_chunked

local dead, jobs, meta, errors = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local offset = arg_int(1, 'offset', 0)
local limit = arg_int(2, 'limit', 1)
if bad then
  return {BAD_ARGUMENT, bad}
end

local ids, died, n = {}, {}, 0
if #ARGV > 2 then
  local given = {}
  for i = 3, #ARGV do
    given[i - 2] = ARGV[i]
  end
  local scores = gather_chunked('ZMSCORE', dead, given)
  for i, id in ipairs(given) do
    if scores[i] then
      n = n + 1
      ids[n] = id
      died[n] = scores[i]
    end
  end
else
  local flat = redis.call('ZRANGE', dead, offset, offset + limit - 1, 'WITHSCORES')
  for i = 1, #flat, 2 do
    n = n + 1
    ids[n] = flat[i]
    died[n] = flat[i + 1]
  end
end
-- Every HMGET in slices: a limit of 12,000 once failed here with "too many results to unpack".
local records = gather_chunked('HMGET', jobs, ids)
local states = gather_chunked('HMGET', meta, ids)
local errs = gather_chunked('HMGET', errors, ids)
local reply, r = {OK}, 1
for i = 1, n do
  reply[r + 1] = ids[i]
  reply[r + 2] = tonumber(died[i])
  reply[r + 3] = records[i]
  reply[r + 4] = states[i]
  reply[r + 5] = errs[i]
  r = r + 5
end
return reply
