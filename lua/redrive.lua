#!lua flags=allow-oom
--[[
redrive: move dead jobs back to the back of ready (of their kind: place.lua) under the same id,
attempts reset to 0.
Either the ids given, or the dead jobs dead for at most max_age_ms, in bounded batches.
A job already redriven max_redrives times stays dead, so a poison job cannot cycle forever.

KEYS
  1   ready   LIST  ids waiting, FIFO
  2   dead    ZSET  id -> time it died (ms)
  3   meta    HASH  id -> "attempts:redrives[:limit]" (jobs with a history or their own limit)
  4   errors  HASH  id -> last error (JSON)
  5   stats   HASH  counters
  6   wake    LIST  marker that blocked workers wait on
  7   attrs   HASH  id -> "<priority> <group>", ranked jobs only (attrs.lua)
  8   ranked  ZSET  the ready ranked jobs (ranked.lua)
  9   flow    HASH  seq counters and per-group counts and flags (arm.lua)
  10  groups  ZSET  group -> turn: the round robin of groups that may lease now
  11  gwait   ZSET  group -> ms: groups waiting out their group rate limit
  12  events  STREAM  (optional) events (events.lua): redriven
ARGV
  1    max_redrives  integer      redrives allowed per job; -1 = no limit (an operator's requeue)
  2    max_age_ms    integer, ms  with no ids: consider jobs dead for at most this long (by
                                  the server's clock); -1 = any age (no clock read)
  3    offset        integer      with no ids: skip this many candidates (those kept back so far)
  4    limit         integer      with no ids: most candidates examined, 1..10000 (MAX_BATCH
                                  in pyqcore/settings.py: bounds one call; checked even with ids)
  5..  id            string       optional: exactly these jobs (then ARGV 2-4 are ignored);
                                  an id given twice counts once
  -2  events_level   integer  with the events key only, second to last: 1 = the terminal
                               transitions only, 2 = every one (events.lua)
  -1  events_maxlen  integer  with the events key only, last: the stream's bound (MAXLEN ~)
REPLY
  {0, redriven, kept_back, not_dead, examined}
  kept_back = at their redrive limit; not_dead = ids given that are not in the dead set;
  a caller scanning by age is done when examined < limit, else calls again with
  offset + kept_back. (The oldest age considered moves on with the clock between calls: a
  job kept back that ages out of it meanwhile makes the next call skip a candidate, which
  stays dead for a later scan; a scan with max_age_ms -1 never moves.)
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
-- @include attrs
-- generated from lua/includes/attrs.lua by `make lua`: edit that file, not this block
-- A job added with a priority or a group (a ranked job; ranked.lua) has an entry in the attrs
-- hash, "<priority> <group>" (group "" = none), from its add until it is acked or purged; a plain
-- job has none.
local function attrs_split(value) -- priority, group
  local p, g = string.match(value, '^(%-?%d+) (.*)$')
  return tonumber(p) or 0, g or ''
end
-- @end attrs
-- @include ranked
-- generated from lua/includes/ranked.lua by `make lua`: edit that file, not this block
-- Ranked jobs: jobs added with a priority or a group (a plain add has neither and goes to the
-- ready LIST). While ready, a ranked job is a member of the ranked ZSET. Every member scores 0,
-- so the set sorts by the member's bytes: "<group> <band> <seq> <id>", band = 1000 - priority in
-- 4 digits (higher priority first), seq in 16 digits (FIFO within a priority). Group names hold
-- no space and no control character, so the members of group G are exactly the range
-- ["G ", "G!"), and the ranked jobs with no group the range [" ", "!").
-- seq counts up from SEQ_BASE for jobs placed at the back and down from it for jobs placed at
-- the front (released or reclaimed), with the counters "back" and "front" of the flow hash:
-- 4e15 of each before a seq would need a 17th digit.
local BAND_ZERO, SEQ_BASE = 1000, 4000000000000000

-- The member's start, "<group> <band> ", shared by every job of one group and priority.
local function ranked_prefix(group, priority)
  return string.format('%s %04d ', group, BAND_ZERO - priority)
end
-- @end ranked
-- @include arm
-- generated from lua/includes/arm.lua by `make lua`: edit that file, not this block
-- Groups share the leasing round robin. The flow hash keeps, per group G, "ready G" (G's jobs in
-- ranked), "active G" (G's leases held), "paused G" and "capped G" (set while G is held out of
-- the round robin at its group_concurrency: "1" while jobs of G wait for it, counted in the
-- hash's "capped"; "0" when G reached it with nothing left ready, so that an add keeps G out
-- too, and becomes "1" then); a field is absent when 0 or unset. The groups ZSET
-- is the round robin: the groups that may lease a job now, scored by turn (the lowest goes next,
-- a group served goes to the back); its member "" stands for the ready jobs with no group. A
-- group waiting out its group_rate_limit is in gwait instead, scored by when it may start again.
-- Every event that can make a group eligible (an add, a lease ending, a resume) arms it, and
-- reserve checks each limit again before leasing: a group with nothing ready costs nothing, and
-- one at a limit is out of the round robin until it may start again.
-- fk holds the keys: flow, groups, gwait (and ready, ranked for place.lua).

local function next_turn(groups_key) -- a turn behind every group in the round robin
  local last = redis.call('ZRANGE', groups_key, '-1', '-1', 'WITHSCORES')[2]
  return (tonumber(last) or 0) + 1
end

-- Puts group g at the back of the round robin if it may lease a job now (and is not in it).
local function arm(fk, g)
  local state = redis.call('HMGET', fk.flow, 'ready ' .. g, 'paused ' .. g, 'capped ' .. g)
  if state[1] and state[3] == '0' then -- held with nothing ready, and now jobs wait for it
    redis.call('HSET', fk.flow, 'capped ' .. g, '1')
    redis.call('HINCRBY', fk.flow, 'capped', '1')
  end
  if state[1] and not state[2] and not state[3] and not redis.call('ZSCORE', fk.gwait, g) then
    redis.call('ZADD', fk.groups, 'NX', string.format('%d', next_turn(fk.groups)), g)
  end
end
-- @end arm
-- @include group_counts
-- generated from lua/includes/group_counts.lua by `make lua`: edit that file, not this block
-- Adds delta to a count of the flow hash (arm.lua); a count that reaches 0 is deleted.
local function count_add(flow_key, field, delta)
  if redis.call('HINCRBY', flow_key, field, string.format('%d', delta)) <= 0 then
    redis.call('HDEL', flow_key, field)
  end
end

-- The groups among attrs values (false: a plain job), in first-seen order, and their counts.
-- A call's jobs share few values: each is parsed once.
local function group_counts(values)
  local order, per, group_of = {}, {}, {}
  for _, value in ipairs(values) do
    if value then
      local g = group_of[value]
      if not g then
        local _
        _, g = attrs_split(value)
        group_of[value] = g
      end
      if g ~= '' then
        if not per[g] then
          order[#order + 1] = g
          per[g] = 0
        end
        per[g] = per[g] + 1
      end
    end
  end
  return order, per
end
-- @end group_counts
-- @include place
-- generated from lua/includes/place.lua by `make lua`: edit that file, not this block
-- Makes jobs ready where each belongs: a plain job (values[i] false: no attrs entry) in the ready
-- LIST, a ranked one in the ranked ZSET under its group and priority (ranked.lua). At the back,
-- or with front ahead of the jobs of its kind (a job given back: released or reclaimed); the
-- jobs keep the order given either way. Returns how many went to the ready LIST.
local function place(fk, ids, values, front)
  local plain, ranked, p, r = {}, {}, 0, 0
  for i, id in ipairs(ids) do
    if values[i] then
      r = r + 1
      ranked[r] = i
    else
      p = p + 1
      plain[p] = id
    end
  end
  if front then -- LPUSH puts each id in front of the previous one: push the last first
    for i = 1, math.floor(p / 2) do
      plain[i], plain[p + 1 - i] = plain[p + 1 - i], plain[i]
    end
  end
  call_chunked(front and 'LPUSH' or 'RPUSH', fk.ready, plain)
  if r > 0 then
    local top = redis.call('HINCRBY', fk.flow, front and 'front' or 'back', string.format('%d', r))
    local first = front and SEQ_BASE - top or SEQ_BASE + top - r + 1
    local members, prefixes = {}, {} -- prefixes: by attrs value, made once per call
    for j, i in ipairs(ranked) do
      local value = values[i]
      local prefix = prefixes[value]
      if not prefix then
        local priority, group = attrs_split(value)
        prefix = ranked_prefix(group, priority)
        prefixes[value] = prefix
      end
      members[2 * j - 1] = '0'
      members[2 * j] = prefix .. string.format('%016d ', first + j - 1) .. ids[i]
    end
    call_chunked('ZADD', fk.ranked, members)
    local order, per = group_counts(values)
    for _, g in ipairs(order) do
      count_add(fk.flow, 'ready ' .. g, per[g])
      arm(fk, g)
    end
  end
  return p
end
-- @end place
-- @include wake
-- generated from lua/includes/wake.lua by `make lua`: edit that file, not this block
-- Leaves one marker on the wake list, so exactly one blocked worker wakes (and rechecks).
local function wake(wake_key)
  if redis.call('LLEN', wake_key) == 0 then
    redis.call('RPUSH', wake_key, '1')
  end
end
-- @end wake
-- @include meta
-- generated from lua/includes/meta.lua by `make lua`: edit that file, not this block
-- Per-job delivery history in the meta hash: "attempts:redrives", only for a job that has some,
-- or "attempts:redrives:limit" for a job added with its own max_retries (enqueue writes
-- "0:0:limit"). attempts counts the deliveries that ended without an ack (failed, expired) since
-- the job was added or last redriven; redrives counts its trips from the dead-letter queue back
-- to ready; limit, when present, is the deliveries the job allows (its max_retries + 1), which
-- fail and reserve's reclaim use instead of the queue's. A job on its first delivery with no
-- limit of its own has no entry, so reserve and ack write none on the hot path.
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

local function meta_get(value) -- attempts, redrives, limit (nil: the queue's)
  if not value then -- no history: the common case on the hot path
    return 0, 0
  end
  local a, r, l = string.match(value, '^(%d+):(%d+):?(%d*)$')
  if not a then
    return 0, 0
  end
  return str_to_int[a], str_to_int[r], l ~= '' and str_to_int[l] or nil
end

local function meta_put(attempts, redrives, limit)
  local value = int_to_str[attempts] .. ':' .. int_to_str[redrives]
  return limit and value .. ':' .. int_to_str[limit] or value
end
-- @end meta
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
local events_bad = events_args(11)
if events_bad then
  return {BAD_ARGUMENT, events_bad}
end

local ready, dead, meta, errors, stats, wake_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local max_redrives = arg_int(1, 'max_redrives', -1)
local max_age = arg_int(2, 'max_age_ms', -1)
local offset = arg_int(3, 'offset', 0)
local limit = arg_int(4, 'limit', 1, 10000)
if bad then
  return {BAD_ARGUMENT, bad}
end

local candidates, not_dead = {}, 0
if #ARGV > 4 then
  local seen = {} -- an id given twice must not go to ready twice
  for i = 5, #ARGV do
    local id = ARGV[i]
    if not seen[id] then
      seen[id] = true
      if redis.call('ZSCORE', dead, id) then
        candidates[#candidates + 1] = id
      else
        not_dead = not_dead + 1
      end
    end
  end
else
  -- %d, not ..: Lua's .. prints a large number with 14 digits (9.007199254741e+15).
  local since = max_age < 0 and '-inf' or string.format('%d', now_ms() - max_age)
  candidates = redis.call('ZRANGEBYSCORE', dead, since, '+inf', 'LIMIT', offset, limit)
end

-- HMGET in slices: any number of ids given (or candidates) fits under Lua's unpack limit.
local states = gather_chunked('HMGET', meta, candidates)
local moved, history, m, kept = {}, {}, 0, 0
for i, id in ipairs(candidates) do
  local _, redrives, own_limit = meta_get(states[i])
  if max_redrives >= 0 and redrives >= max_redrives then
    kept = kept + 1
  else
    m = m + 1
    moved[m] = id
    history[2 * m - 1] = id
    history[2 * m] = meta_put(0, redrives + 1, own_limit) -- a job's own limit stays
  end
end
if m > 0 then
  call_chunked('HSET', meta, history)
  call_chunked('ZREM', dead, moved)
  call_chunked('HDEL', errors, moved)
  local fk = {ready = ready, ranked = KEYS[8], flow = KEYS[9], groups = KEYS[10], gwait = KEYS[11]}
  place(fk, moved, redis.call('EXISTS', KEYS[7]) == 1 and gather_chunked('HMGET', KEYS[7], moved) or {},
    false)
  redis.call('HINCRBY', stats, 'redriven', string.format('%d', m))
  wake(wake_key)
  for _, id in ipairs(moved) do
    emit('redriven', id, 0)
  end
end
return {OK, m, kept, not_dead, #candidates}
