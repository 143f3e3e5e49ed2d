#!lua flags=allow-oom
--[[
clear: delete up to limit waiting jobs (ready first: the plain list, then the ranked jobs; then
delayed) with their records, history and errors; leased and dead jobs are left alone. Callers
repeat until remaining is 0.

KEYS
  1   ready    LIST  ids waiting, FIFO
  2   delayed  ZSET  id -> due time (ms)
  3   jobs     HASH  id -> serialized job record
  4   meta     HASH  id -> "attempts:redrives" (jobs with a history only)
  5   errors   HASH  id -> last error (JSON)
  6   stats    HASH  counters ("cancelled": jobs deleted by a clear or a cancel)
  7   attrs    HASH  id -> "<priority> <group>", ranked jobs only (attrs.lua)
  8   ranked   ZSET  the ready ranked jobs (ranked.lua)
  9   flow     HASH  per-group counts and flags (arm.lua): "ready G"
  10  groups   ZSET  group -> turn: the round robin of groups that may lease now
  11  gwait    ZSET  group -> ms: groups waiting out their group rate limit
ARGV
  1  limit  integer  most jobs deleted by this call, 1..10000
REPLY
  {0, deleted, remaining}  remaining = waiting jobs left (ready, ranked + delayed)
ERRORS
  {1, message}  BAD_ARGUMENT; nothing written
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
-- @include call_chunked
-- generated from lua/includes/call_chunked.lua by `make lua`: edit that file, not this block
-- Calls a variadic command over items in slices of 1000, so any count stays under Lua's unpack
-- limit (about 8000 values in Redis's Lua 5.1); returns the last slice's reply (no call at all,
-- and nil, for no items).
local function call_chunked(cmd, key, items)
  local last
  for i = 1, #items, 1000 do
    last = redis.call(cmd, key, unpack(items, i, math.min(i + 999, #items)))
  end
  return last
end
-- @end call_chunked

local ready, delayed, jobs, meta, errors, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local limit = arg_int(1, 'limit', 1, 10000)
if bad then
  return {BAD_ARGUMENT, bad}
end

local attrs, ranked, flow = KEYS[7], KEYS[8], KEYS[9]
local ids = redis.call('LPOP', ready, string.format('%d', limit)) or {}
local flowing = redis.call('EXISTS', attrs) == 1 -- some job has a priority or a group
if #ids < limit and flowing then -- the ranked ready jobs: each group's count drops with them
  local members = redis.call('ZRANGE', ranked, '0', string.format('%d', limit - #ids - 1))
  call_chunked('ZREM', ranked, members)
  local order, per = {}, {}
  for _, member in ipairs(members) do
    local group, id = string.match(member, '^([^ ]*) %d+ %d+ (.*)$')
    ids[#ids + 1] = id
    if group ~= '' and not per[group] then
      order[#order + 1] = group
    end
    per[group] = (per[group] or 0) + 1
  end
  for _, group in ipairs(order) do -- a group left with nothing ready leaves the round robin
    if redis.call('HINCRBY', flow, 'ready ' .. group, string.format('%d', -per[group])) <= 0 then
      redis.call('HDEL', flow, 'ready ' .. group)
      redis.call('ZREM', KEYS[10], group)
      redis.call('ZREM', KEYS[11], group)
    end
  end
end
if #ids < limit then
  local later = redis.call('ZRANGE', delayed, '0', string.format('%d', limit - #ids - 1))
  if #later > 0 then
    call_chunked('ZREM', delayed, later)
    for _, id in ipairs(later) do
      ids[#ids + 1] = id
    end
  end
end
if #ids > 0 then
  call_chunked('HDEL', jobs, ids)
  call_chunked('HDEL', meta, ids)
  call_chunked('HDEL', errors, ids)
  if flowing then
    call_chunked('HDEL', attrs, ids)
  end
  redis.call('HINCRBY', stats, 'cancelled', string.format('%d', #ids))
end
return {OK, #ids, redis.call('LLEN', ready) + redis.call('ZCARD', ranked) +
  redis.call('ZCARD', delayed)}
