--[[
schedule_claim: enqueue the due runs of one schedule, once: only the caller that names the
schedule's current due time moves it on (to the next one) and enqueues its runs; any other
caller (a scheduler that read the same due time, a redefinition meanwhile) changes nothing.

KEYS
  1  schedule_due  ZSET  schedule name -> its next due time (ms, the server's clock)
  2  ready         LIST  ids waiting, FIFO
  3  jobs          HASH  id -> serialized job record
  4  stats         HASH  counters; field "added"
  5  wake          LIST  marker that blocked workers wait on
  6  meta          HASH  id -> "attempts:redrives:limit": written only with max_attempts > 0
ARGV
  1      name          string       the schedule
  2      expected_ms   integer, ms  its due time as the caller read it; it must have come
  3      next_ms       integer, ms  its due time after these runs (> expected_ms)
  4      max_attempts  integer      deliveries the runs allow (0 = the queue's)
  3+2k   id            string       run k's job id (the schedule's name and due time: an id
                                    that exists is skipped, as by an idempotent add)
  4+2k   record        bytes        run k's record (k = 1..n, n >= 0)
REPLY
  {0, enqueued}  enqueued = jobs added (0 when another caller claimed these runs first, the
                 schedule changed or is gone, or expected_ms is still to come)
ERRORS
  {1, message}  BAD_ARGUMENT: bad name, times or max_attempts, or an odd id/record list;
                nothing written
]]
-- @include codes
-- generated from lua/includes/codes.lua by `make lua`: edit that file, not this block
-- Reply codes (mirrored by pyqcore.codes.Code; a test keeps the two equal).
local OK, BAD_ARGUMENT, LEASE_LOST, LOCKED, QUEUE_FULL = 0, 1, 2, 3, 4
-- @end codes
-- @include clock
-- generated from lua/includes/clock.lua by `make lua`: edit that file, not this block
-- The queue's one clock is the Redis server's: now_ms() reads TIME, in milliseconds since the
-- epoch. No script takes the time from its caller, so a client whose clock is off changes
-- nothing. Redis >= 7 replicates a script's effects (the writes it made), never the script
-- itself, so replicas and the AOF get the values computed here: reading the clock inside a
-- script is deterministic for them. Read it only where time matters (a plain add never does).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- @end clock
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
-- @include wake
-- generated from lua/includes/wake.lua by `make lua`: edit that file, not this block
-- Leaves one marker on the wake list, so exactly one blocked worker wakes (and rechecks).
local function wake(wake_key)
  if redis.call('LLEN', wake_key) == 0 then
    redis.call('RPUSH', wake_key, '1')
  end
end
-- @end wake
-- @include fresh
-- generated from lua/includes/fresh.lua by `make lua`: edit that file, not this block
-- What an add does with the jobs it stored (enqueue.lua; schedule_claim.lua with a schedule's
-- runs): their own delivery limit, if they have one, and their place at the back of the ready
-- list.

-- Gives the jobs `ids` their own delivery limit (max_retries + 1: limit_arg, as ARGV text) in the
-- meta hash as meta.lua's meta_put writes it, "0:0:limit": fail and reserve's reclaim read it
-- instead of the queue's.
local function put_limits(meta_key, ids, limit_arg)
  local limits, limit = {}, '0:0:' .. limit_arg
  for i, id in ipairs(ids) do
    limits[2 * i - 1] = id
    limits[2 * i] = limit
  end
  call_chunked('HSET', meta_key, limits)
end

-- Appends ids to the ready list, waking a blocked worker if the list was empty: only an empty
-- list can have workers blocked on it (a longer one was non-empty at their last reserve, which
-- passes the wake-up on while work remains).
local function push_ready(ready_key, wake_key, ids)
  if call_chunked('RPUSH', ready_key, ids) == #ids then
    wake(wake_key)
  end
end
-- @end fresh

local due_key, ready, jobs, stats, wake_key, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local name = ARGV[1] or ''
local expected = arg_int(2, 'expected_ms', 0)
local next_due = arg_int(3, 'next_ms', 0)
local max_attempts = arg_int(4, 'max_attempts', 0)
if name == '' then
  bad = bad or 'ARGV[1] name must not be empty'
end
if next_due <= expected then
  bad = bad or string.format('ARGV[3] next_ms must be after expected_ms, got %s', ARGV[3])
end
if #ARGV % 2 ~= 0 then
  bad = bad or 'ARGV[5..] must be (id, record) pairs'
end
if bad then
  return {BAD_ARGUMENT, bad}
end

-- The claim: this caller read the current due time, and it has come by the server's clock.
local current = tonumber(redis.call('ZSCORE', due_key, name))
if current ~= expected or expected > now_ms() then
  return {OK, 0}
end
redis.call('ZADD', due_key, ARGV[3], name)

local fresh = {}
for i = 5, #ARGV, 2 do
  if redis.call('HSETNX', jobs, ARGV[i], ARGV[i + 1]) == 1 then
    fresh[#fresh + 1] = ARGV[i]
  end
end
if #fresh > 0 then -- as an add of these ids does (enqueue.lua)
  if max_attempts > 0 then
    put_limits(meta, fresh, ARGV[4])
  end
  push_ready(ready, wake_key, fresh)
  redis.call('HINCRBY', stats, 'added', string.format('%d', #fresh))
end
return {OK, #fresh}
