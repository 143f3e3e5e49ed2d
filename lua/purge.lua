#!lua flags=allow-oom
--[[
purge: delete dead jobs for good (record, state and error): the ids given, or those dead for
longer than min_age_ms, at most limit per call.

KEYS
  1  dead    ZSET  id -> time it died (ms)
  2  jobs    HASH  id -> serialized job record
  3  meta    HASH  id -> "attempts:redrives[:limit]" (jobs with a history or their own limit)
  4  errors  HASH  id -> last error (JSON)
  5  stats   HASH  counters
  6  attrs   HASH  id -> "<priority> <group>", ranked jobs only (attrs.lua)
  7  events  STREAM  (optional) events (events.lua): purged
ARGV
  1    min_age_ms   integer, ms  with no ids: purge jobs dead for longer than this (by the
                                 server's clock); 0 = every dead job (no clock read)
  2    limit        integer      with no ids: most jobs purged, 1..10000 (MAX_BATCH in
                                 pyqcore/settings.py: bounds one call; checked even with ids)
  3..  id           string       optional: exactly these dead jobs (ids not dead are ignored;
                                 an id given twice counts once)
  -2  events_level   integer  with the events key only, second to last: 1 = the terminal
                               transitions only, 2 = every one (events.lua)
  -1  events_maxlen  integer  with the events key only, last: the stream's bound (MAXLEN ~)
REPLY
  {0, purged}  a caller purging by age is done when purged < limit
ERRORS
  {1, message}  BAD_ARGUMENT (e.g. limit > 10000); nothing written
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

-- The events arguments, if sent (taken off ARGV: what follows reads a call without events).
local events_bad = events_args(6)
if events_bad then
  return {BAD_ARGUMENT, events_bad}
end

local dead, jobs, meta, errors, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local min_age = arg_int(1, 'min_age_ms', 0)
local limit = arg_int(2, 'limit', 1, 10000)
if bad then
  return {BAD_ARGUMENT, bad}
end

local ids = {}
if #ARGV > 2 then
  local seen = {}
  for i = 3, #ARGV do
    local id = ARGV[i]
    if not seen[id] and redis.call('ZSCORE', dead, id) then
      ids[#ids + 1] = id
    end
    seen[id] = true
  end
else
  -- %d, not ..: Lua's .. prints a large number with 14 digits (9.007199254741e+15).
  local before = min_age == 0 and '+inf' or string.format('(%d', now_ms() - min_age)
  ids = redis.call('ZRANGEBYSCORE', dead, '-inf', before, 'LIMIT', 0, limit)
end
if #ids > 0 then
  if events_want('purged') then
    local states = gather_chunked('HMGET', meta, ids)
    for i, id in ipairs(ids) do
      emit('purged', id, attempts_of(states[i]))
    end
  end
  call_chunked('ZREM', dead, ids)
  call_chunked('HDEL', jobs, ids)
  call_chunked('HDEL', meta, ids)
  call_chunked('HDEL', errors, ids)
  call_chunked('HDEL', KEYS[6], ids)
  redis.call('HINCRBY', stats, 'purged', string.format('%d', #ids))
end
return {OK, #ids}
