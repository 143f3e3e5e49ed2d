#!lua flags=allow-oom
--[[
clear: delete up to limit waiting jobs (ready first: the plain list, then the ranked jobs; then
delayed) with their records, history and errors; leased and dead jobs are left alone. Callers
repeat until remaining is 0. Sent the kept keys (a queue that keeps finished jobs:
keep_cancelled.lua), it keeps each job it deletes as cancelled now, with its record and
attempts, trimmed as complete.lua trims.

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
  12  completed  ZSET  (optional) id -> when it finished (ms): kept jobs (12-14 go together)
  13  kept       HASH  (optional) id -> "c:attempts:redrives:" + record: cancelled (keep_cancelled)
  14  results    HASH  (optional) id -> a completed job's result: a cancelled job's is deleted
  15  events   STREAM  (optional) events (events.lua): cancelled (each job deleted)
ARGV
  1  limit  integer  most jobs deleted by this call, 1..10000
  -4  keep_ms     integer, ms  with the kept keys only, before the events arguments (second to
                               last without them): keep a finished job this long (0: no age
                               bound)
  -3  keep_count  integer      with the kept keys only, right after keep_ms: keep at most this
                               many (0: no count bound)
  -2  events_level   integer  with the events key only, second to last: 1 = the terminal
                               transitions only, 2 = every one (events.lua)
  -1  events_maxlen  integer  with the events key only, last: the stream's bound (MAXLEN ~)
REPLY
  {0, deleted, remaining}  remaining = waiting jobs left (ready, ranked + delayed)
ERRORS
  {1, message}  BAD_ARGUMENT (a bad limit or bound, or a wrong number of KEYS); nothing written
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
-- @include keep_trim
-- generated from lua/includes/keep_trim.lua by `make lua`: edit that file, not this block
-- Kept finished jobs (keep_completed, keep_completed_count): the completed ZSET (id -> when it
-- finished, ms), the kept HASH (id -> "attempts:redrives:" and its record, "c:" before them
-- for a cancelled job: keep_cancelled.lua) and results (id -> its handler's return value).
-- Trims them, oldest first: by age (finished more than max_age_ms before now), then by count
-- (more than max_count kept); 0 is no bound. At most budget entries go per call, so a call's work
-- stays bounded and (with a budget above what the call keeps) the kept set shrinks faster
-- than it grows.
local function keep_trim(completed, kept, results, now, max_age_ms, max_count, budget)
  local old = {}
  if max_age_ms > 0 then
    old = redis.call('ZRANGEBYSCORE', completed, '-inf', string.format('(%d', now - max_age_ms),
                     'LIMIT', '0', string.format('%d', budget))
  end
  if max_count > 0 and #old < budget then
    local excess = redis.call('ZCARD', completed) - #old - max_count
    if excess > 0 then
      local first = #old
      local more = redis.call('ZRANGE', completed, string.format('%d', first),
                              string.format('%d', first + math.min(excess, budget - #old) - 1))
      for _, id in ipairs(more) do
        old[#old + 1] = id
      end
    end
  end
  if #old > 0 then
    call_chunked('ZREM', completed, old)
    call_chunked('HDEL', kept, old)
    call_chunked('HDEL', results, old)
  end
end
-- @end keep_trim
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
-- @include attempts_of
-- generated from lua/includes/attempts_of.lua by `make lua`: edit that file, not this block
-- The deliveries counted in a meta value ("attempts:redrives[...]", meta.lua), 0 for none: an
-- event's attempt, read without the rest of meta.lua.
local function attempts_of(value)
  return value and tonumber(string.match(value, '^(%d+)')) or 0
end
-- @end attempts_of
-- @include keep_cancelled
-- generated from lua/includes/keep_cancelled.lua by `make lua`: edit that file, not this block
-- Cancelled jobs kept (a queue with keep_completed or keep_completed_count): a call that wants
-- them sends the kept keys (completed, kept, results: keep_trim.lua) after its own KEYS, before
-- the events stream if any, and the bounds keep_ms and keep_count as its last two ARGV entries
-- before the events arguments. A cancelled job is kept as a completed one is (its time in
-- completed, trimmed by the same bounds), its kept value marked "c:" in front (a completed
-- job's starts with a digit) and no result. A call without the kept keys keeps nothing.
local keeping, kept_max_ms, kept_max_count = false, 0, 0
local KEPT_CANCELLED = 'c:'

-- If the call sent the kept keys (keys_without + 3 KEYS, not counting the events stream: call
-- events_args first), reads the bounds and takes them off ARGV, so the rest of the script reads
-- what a call without them sends. Returns an error message for bad ones or a wrong number of
-- KEYS (the script refuses the call before any write), else nil.
local function keep_args(keys_without)
  local sent = #KEYS - (events_key and 1 or 0)
  if sent == keys_without then
    return nil
  end
  if sent ~= keys_without + 3 then
    return string.format('KEYS must be %d, or %d with the kept keys (one more with events), got %d',
      keys_without, keys_without + 3, #KEYS)
  end
  local n = #ARGV
  local bounds = {}
  for i = n - 1, n do
    local s = ARGV[i]
    local v = s and (s == '0' or string.match(s, '^[1-9]%d*$')) and tonumber(s)
    if not v or v > 9007199254740991 then
      return string.format('ARGV[%d] %s must be an integer >= 0, got %q', i,
        i == n and 'keep_count' or 'keep_ms', tostring(s))
    end
    bounds[#bounds + 1] = v
  end
  keeping, kept_max_ms, kept_max_count = true, bounds[1], bounds[2]
  ARGV[n], ARGV[n - 1] = nil, nil
  return nil
end

-- The kept value of a cancelled job: the mark, its history ("attempts:redrives" of its meta
-- value, with running deliveries more counted: 1 for a job cancelled while it runs) and record.
local function kept_cancelled(history, running, record)
  local a, r = string.match(history or '', '^(%d+):(%d+)')
  return string.format('%s%d:%s:', KEPT_CANCELLED, (tonumber(a) or 0) + running, r or '0') ..
    (record or '')
end

-- Keeps cancelled jobs (ids, and their kept values from kept_cancelled) as finished at now (ms)
-- in the kept keys ks = {completed, kept, results}, dropping any earlier result of their ids,
-- then trims as complete.lua does: at most #ids + 100 entries.
local function keep_cancelled(ks, ids, values, now)
  local finished, entries = {}, {}
  local at = string.format('%d', now)
  for i, id in ipairs(ids) do
    finished[2 * i - 1], finished[2 * i] = at, id
    entries[2 * i - 1], entries[2 * i] = id, values[i]
  end
  call_chunked('ZADD', ks.completed, finished)
  call_chunked('HSET', ks.kept, entries)
  call_chunked('HDEL', ks.results, ids)
  keep_trim(ks.completed, ks.kept, ks.results, now, kept_max_ms, kept_max_count, #ids + 100)
end
-- @end keep_cancelled

-- The events arguments, if sent (taken off ARGV: what follows reads a call without events).
-- The kept keys, if sent, come before the stream: then the bounds before the events arguments.
local events_bad = events_args(#KEYS > 12 and 14 or 11) or keep_args(11)
if events_bad then
  return {BAD_ARGUMENT, events_bad}
end

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
  local states = (events_key or keeping) and gather_chunked('HMGET', meta, ids)
  if events_key then
    for i, id in ipairs(ids) do
      emit('cancelled', id, attempts_of(states[i]))
    end
  end
  if keeping then
    local records, gone, values = gather_chunked('HMGET', jobs, ids), {}, {}
    for i, id in ipairs(ids) do
      if records[i] then -- (an orphan id, whose record is gone, is no job to keep)
        gone[#gone + 1] = id
        values[#gone] = kept_cancelled(states[i], 0, records[i])
      end
    end
    if #gone > 0 then
      keep_cancelled({completed = KEYS[12], kept = KEYS[13], results = KEYS[14]}, gone, values,
        now_ms())
    end
  end
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
