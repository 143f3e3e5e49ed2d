#!lua flags=allow-oom
--[[
fail: one decision for a delivery that failed: retry after a backoff while attempts remain,
otherwise move the job to the dead-letter queue with its error.

KEYS
  1   ready    LIST  ids waiting, FIFO
  2   delayed  ZSET  id -> due time (ms)
  3   leased   ZSET  "token:id" -> lease deadline (ms)
  4   dead     ZSET  id -> time it died (ms)
  5   meta     HASH  id -> "attempts:redrives[:limit]" (jobs with a history or their own limit)
  6   errors   HASH  id -> last error (JSON)
  7   stats    HASH  counters
  8   wake     LIST  marker that blocked workers wait on
  9   jobs     HASH  id -> serialized job record
  10  attrs    HASH  id -> "<priority> <group>", ranked jobs only (attrs.lua)
  11  starved  STRING  set when max_active stopped a lease (reserve.lua): a lease ending wakes one
  12  ranked   ZSET  the ready ranked jobs (ranked.lua)
  13  flow     HASH  seq counters and per-group counts and flags (arm.lua)
  14  groups   ZSET  group -> turn: the round robin of groups that may lease now
  15  gwait    ZSET  group -> ms: groups waiting out their group rate limit
  16  events   STREAM  (optional) events (events.lua): retried, dead, cancelled
ARGV
  1  id            string       job id
  2  token         16 hex       the job's lease token
  3  max_attempts  integer      deliveries allowed per job (max_retries + 1), >= 1; a job
                                added with its own max_retries keeps its limit (meta.lua)
  4  backoff_ms    integer, ms  wait before the retry, from now (the server's clock); 0 = back
                                of ready now
  5  error         string       JSON {type, message, traceback}, stored as the job's last error
  6  retryable     0 or 1       0 = dead now whatever the attempts left (any other value is
                                a BAD_ARGUMENT)
  -2  events_level   integer  with the events key only, second to last: 1 = the terminal
                               transitions only, 2 = every one (events.lua)
  -1  events_maxlen  integer  with the events key only, last: the stream's bound (MAXLEN ~)
REPLY
  {0, "retry", due_ms}  the job waits in delayed until due_ms (or is back at the end of ready,
                        of its kind, due now: place.lua)
  {0, "dead", died_ms}  the job is in the dead-letter queue since died_ms
  {0, "cancelled", now_ms}  the job was cancelled while leased (cancel.lua): deleted, not retried
  (times on the server's clock)
ERRORS
  {1, message}  BAD_ARGUMENT; nothing written
  {2, message}  LEASE_LOST: the token is not the job's current lease; nothing written
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
-- @include lease
-- generated from lua/includes/lease.lua by `make lua`: edit that file, not this block
-- A lease is one member of the leased ZSET, "token:id" scored by its deadline. Holding the
-- token is holding the member: a batch of leases is granted with one ZADD (reserve.lua),
-- checked and dropped with one ZADD XX CH and one ZREM (take_leases.lua), and no per-job state
-- is written to lease a job. Tokens are exactly TOKEN_LENGTH hex digits, so "token:id" splits
-- one way only, whatever the id contains.
local TOKEN_LENGTH = 16

local function lease_member(token, id)
  return token .. ':' .. id
end
-- @end lease
-- @include arg_token
-- generated from lua/includes/arg_token.lua by `make lua`: edit that file, not this block
-- ARGV[i] as a lease token: TOKEN_LENGTH hex digits (64 random bits from the caller; a counter
-- in Redis would repeat itself after a failover to a replica that had not seen its last values).
local function arg_token(i, name)
  local s = ARGV[i]
  if not (s and #s == TOKEN_LENGTH and string.match(s, '^%x+$')) then
    bad = bad or string.format('ARGV[%d] %s must be %d hex digits, got %q', i, name, TOKEN_LENGTH, tostring(s))
    return string.rep('0', TOKEN_LENGTH)
  end
  return s
end
-- @end arg_token
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
-- @include leases_ended
-- generated from lua/includes/leases_ended.lua by `make lua`: edit that file, not this block
-- Books the end of leases (acked, failed, released, reclaimed) of jobs with these attrs values:
-- each group's active count drops, and a group held at its group_concurrency is armed again
-- (the flow hash's "capped" counts the groups held so). Returns whether one was: its jobs
-- may start again, so a worker waiting for them should be woken.
local function leases_ended(fk, values)
  local order, per = group_counts(values)
  local uncapped = false
  for _, g in ipairs(order) do
    count_add(fk.flow, 'active ' .. g, -per[g])
    local capped = redis.call('HGET', fk.flow, 'capped ' .. g)
    if capped then
      redis.call('HDEL', fk.flow, 'capped ' .. g)
      arm(fk, g)
      if capped == '1' then -- jobs of g waited for it
        count_add(fk.flow, 'capped', -1)
        uncapped = true
      end
    end
  end
  return uncapped
end
-- @end leases_ended
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
-- @include cancel_mark
-- generated from lua/includes/cancel_mark.lua by `make lua`: edit that file, not this block
-- A leased job asked to stop (cancel.lua) has its meta entry marked: "attempts:redrives[:limit]:c".
-- extend stops renewing its lease; fail and an expired lease (reserve) delete it instead of
-- retrying; ack deletes it with the rest of the entry. Any rewrite (meta_put) drops the mark.
local CANCEL_MARK = ':c'

local function meta_cancelled(value) -- whether a leased job was asked to stop (cancel.lua)
  return value ~= nil and value ~= false and string.sub(value, -2) == CANCEL_MARK
end
-- @end cancel_mark
-- @include bury
-- generated from lua/includes/bury.lua by `make lua`: edit that file, not this block
-- Moves one job to the queue's part of the dead-letter queue, with the error that put it there.
-- The record stays in the jobs hash, so the job can be inspected and redriven under its own id.
-- now_arg is the time as a string: a Lua number argument would be printf'd by Redis.
local function bury(dead_key, errors_key, stats_key, id, now_arg, error_json)
  redis.call('ZADD', dead_key, now_arg, id)
  redis.call('HSET', errors_key, id, error_json)
  redis.call('HINCRBY', stats_key, 'dead', '1')
end
-- @end bury
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
local events_bad = events_args(15)
if events_bad then
  return {BAD_ARGUMENT, events_bad}
end

local ready, delayed, leased, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local meta, errors, stats, wake_key = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local attrs, starved = KEYS[10], KEYS[11]
local fk = {ready = ready, ranked = KEYS[12], flow = KEYS[13], groups = KEYS[14], gwait = KEYS[15]}
local id = ARGV[1] or ''
local token = arg_token(2, 'token')
local max_attempts = arg_int(3, 'max_attempts', 1)
local backoff = arg_int(4, 'backoff_ms', 0)
local error_json = ARGV[5] or ''
local retryable = arg_int(6, 'retryable', 0, 1)
if id == '' then
  bad = bad or 'ARGV[1] id must not be empty'
end
if bad then
  return {BAD_ARGUMENT, bad}
end

-- Dropping the lease is the check: ZREM answers 0, and writes nothing, for a lease not held.
if redis.call('ZREM', leased, lease_member(token, id)) == 0 then
  return {LEASE_LOST, 'job ' .. id .. ' is not leased under token ' .. token}
end
-- Neither key exists on a queue that never used priorities, groups or max_active.
local value = false -- the job's attrs value, if it is ranked
if redis.call('EXISTS', attrs, starved) > 0 then
  value = redis.call('HGET', attrs, id)
  local uncapped = leases_ended(fk, {value})
  -- A worker may wait for a place under max_active, or for a group back under its limit.
  if redis.call('DEL', starved) == 1 or uncapped then
    wake(wake_key)
  end
end
local history = redis.call('HGET', meta, id)
local now = now_ms()
if meta_cancelled(history) then -- cancelled while leased: this delivery was its last
  redis.call('HDEL', KEYS[9], id)
  redis.call('HDEL', meta, id)
  redis.call('HDEL', errors, id)
  if value then
    redis.call('HDEL', attrs, id)
  end
  redis.call('HINCRBY', stats, 'cancelled', '1')
  emit('cancelled', id, attempts_of(history) + 1)
  return {OK, 'cancelled', now}
end
local attempts, redrives, limit = meta_get(history)
attempts = attempts + 1 -- this delivery
redis.call('HSET', meta, id, meta_put(attempts, redrives, limit))

if retryable == 1 and attempts < (limit or max_attempts) then -- the job's own limit first
  redis.call('HSET', errors, id, error_json)
  redis.call('HINCRBY', stats, 'retried', '1')
  emit('retried', id, attempts)
  wake(wake_key)
  if backoff == 0 then
    place(fk, {id}, {value}, false)
    return {OK, 'retry', now}
  end
  redis.call('ZADD', delayed, string.format('%d', now + backoff), id)
  return {OK, 'retry', now + backoff}
end
bury(dead, errors, stats, id, string.format('%d', now), error_json)
emit('dead', id, attempts)
return {OK, 'dead', now}
