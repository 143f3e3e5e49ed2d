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
  7  events        STREAM  (optional) events (events.lua): added (each run enqueued)
ARGV
  1      name          string       the schedule
  2      expected_ms   integer, ms  its due time as the caller read it; it must have come
  3      next_ms       integer, ms  its due time after these runs (> expected_ms)
  4      max_attempts  integer      deliveries the runs allow (0 = the queue's)
  3+2k   id            string       run k's job id (the schedule's name and due time: an id
                                    that exists is skipped, as by an idempotent add)
  4+2k   record        bytes        run k's record (k = 1..n, n >= 0)
  -2     events_level  integer      with the events key only, second to last: 1 or 2 (a run
                                    writes "added" at level 2 only; events.lua)
  -1     events_maxlen integer      with the events key only, last: the stream's bound
REPLY
  {0, enqueued}  enqueued = jobs added (0 when another caller claimed these runs first, the
                 schedule changed or is gone, or expected_ms is still to come)
ERRORS
  {1, message}  BAD_ARGUMENT: bad name, times or max_attempts, or an odd id/record list;
                bad events_level or events_maxlen; nothing written
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
-- @include events
-- generated from lua/includes/events.lua by `make lua`: edit that file, not this block
-- Events (opt-in, per queue): one entry per job and transition in the partition's events STREAM,
-- fields event (added, started, completed, retried, dead, cancelled, redriven, purged), id and
-- attempt; the entry id is the server's time. A call that wants them sends the stream as its
-- LAST KEYS entry (one more key than a call without events) and the level and the stream's
-- bound as its last two ARGV entries: level 1 writes the terminal transitions only
-- (completed, dead, cancelled: what queue.result() waits for), level 2 every one. A call
-- without events sends neither, and the script does nothing more than the checks below.
local events_key, events_level, events_maxlen = false, 0, '0'

-- If the call sent the stream (keys_without + 1 KEYS), reads the level and the bound and takes
-- them off ARGV, so the rest of the script reads what a call without events sends. Returns an
-- error message for bad ones (the script refuses the call before any write), else nil.
local function events_args(keys_without)
  if #KEYS ~= keys_without + 1 then
    return nil
  end
  local n = #ARGV
  local level, maxlen = ARGV[n - 1], ARGV[n]
  if level ~= '1' and level ~= '2' then
    return string.format('ARGV[%d] events_level must be 1 or 2, got %q', n - 1, tostring(level))
  end
  if not (maxlen and string.match(maxlen, '^[1-9]%d*$') and tonumber(maxlen) <= 9007199254740991) then
    return string.format('ARGV[%d] events_maxlen must be an integer >= 1, got %q', n, tostring(maxlen))
  end
  events_key, events_level, events_maxlen = KEYS[#KEYS], tonumber(level), maxlen
  ARGV[n], ARGV[n - 1] = nil, nil
  return nil
end

-- Whether a transition of this kind is written at the call's level.
local function events_want(kind)
  return events_level == 2 or events_level == 1 and
    (kind == 'completed' or kind == 'dead' or kind == 'cancelled')
end

-- Appends one entry (attempt: a number or its text), the stream trimmed to about its bound.
local function emit(kind, id, attempt)
  if events_want(kind) then
    redis.call('XADD', events_key, 'MAXLEN', '~', events_maxlen, '*', 'event', kind, 'id', id,
      'attempt', type(attempt) == 'number' and string.format('%d', attempt) or attempt)
  end
end
-- @end events

-- The events arguments, if sent (taken off ARGV: what follows reads a call without events).
local events_bad = events_args(6)
if events_bad then
  return {BAD_ARGUMENT, events_bad}
end

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
  for _, id in ipairs(fresh) do
    emit('added', id, 0)
  end
end
return {OK, #fresh}
