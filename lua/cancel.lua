#!lua flags=allow-oom
--[[
cancel: stop jobs by id. A waiting or delayed job is deleted (it will never be delivered); a
leased (active) job is marked in meta ("attempts:redrives[:limit]:c"): its handler sees it as
job.cancelled after the next heartbeat, extend no longer renews its lease, and a failed
delivery or an expired lease deletes it instead of retrying (an ack still completes it). Dead
jobs and unknown ids are left alone. Sent the kept keys (a queue that keeps finished jobs:
keep_cancelled.lua), it also keeps each job it deletes or marks as cancelled now, with its
record and attempts (a marked job's running delivery counted), trimmed as complete.lua trims;
the live job wins over that entry while it exists (job_info.lua, result.lua), and an ack of a
marked job overwrites it as completed. Each id costs a scan of the ready list (LREM), or for a
ranked job (a priority or a group: ranked.lua) of its group and priority's range of the ranked
jobs: at most 100 ids per call.

KEYS
  1   ready    LIST  ids waiting, FIFO
  2   delayed  ZSET  id -> due time (ms)
  3   dead     ZSET  id -> time it died (ms)
  4   jobs     HASH  id -> serialized job record
  5   meta     HASH  id -> "attempts:redrives" (jobs with a history only)
  6   errors   HASH  id -> last error (JSON)
  7   stats    HASH  counters ("cancelled": jobs deleted by a cancel)
  8   attrs    HASH  id -> "<priority> <group>", ranked jobs only (attrs.lua)
  9   ranked   ZSET  the ready ranked jobs (ranked.lua)
  10  flow     HASH  per-group counts and flags (arm.lua): "ready G"
  11  groups   ZSET  group -> turn: the round robin of groups that may lease now
  12  gwait    ZSET  group -> ms: groups waiting out their group rate limit
  13  completed  ZSET  (optional) id -> when it finished (ms): kept jobs (13-15 go together)
  14  kept       HASH  (optional) id -> "c:attempts:redrives:" + record: cancelled (keep_cancelled)
  15  results    HASH  (optional) id -> a completed job's result: a cancelled job's is deleted
  16  events   STREAM  (optional) events (events.lua): cancelled (a job deleted)
ARGV
  k  id  string  job id (k = 1..N, N <= 100)
  -4  keep_ms     integer, ms  with the kept keys only, before the events arguments (second to
                               last without them): keep a finished job this long (0: no age
                               bound)
  -3  keep_count  integer      with the kept keys only, right after keep_ms: keep at most this
                               many (0: no count bound)
  -2  events_level   integer  with the events key only, second to last: 1 = the terminal
                               transitions only, 2 = every one (events.lua)
  -1  events_maxlen  integer  with the events key only, last: the stream's bound (MAXLEN ~)
REPLY
  {0, outcome...}  one per id, in order: 1 deleted (it was waiting or delayed), 2 marked (it is
                   active), 0 nothing done (unknown, dead, or already marked)
ERRORS
  {1, message}  BAD_ARGUMENT: no id, more than 100, or an empty one, a bad bound, or a wrong
                number of KEYS; nothing written
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
local events_bad = events_args(#KEYS > 13 and 15 or 12) or keep_args(12)
if events_bad then
  return {BAD_ARGUMENT, events_bad}
end

local ready, delayed, dead, jobs = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local meta, errors, stats = KEYS[5], KEYS[6], KEYS[7]
if #ARGV < 1 or #ARGV > 100 then
  return {BAD_ARGUMENT, 'ARGV must be 1 to 100 ids, got ' .. #ARGV}
end
for i, id in ipairs(ARGV) do
  if id == '' then
    return {BAD_ARGUMENT, string.format('ARGV[%d] id must not be empty', i)}
  end
end

local attrs, ranked, flow, groups, gwait = KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local flowing = redis.call('EXISTS', attrs) == 1 -- some job has a priority or a group

-- Removes a ready ranked job, found by a scan of the members of its group and priority; a group
-- left with nothing ready leaves the round robin. Whether it was ready.
local function unrank(value, id)
  local priority, group = attrs_split(value)
  local prefix = ranked_prefix(group, priority)
  local lo, hi, offset = '[' .. prefix, '(' .. prefix .. ':', 0 -- ':' sorts after the seq digits
  repeat
    local page = redis.call('ZRANGEBYLEX', ranked, lo, hi, 'LIMIT', string.format('%d', offset), '1000')
    for _, member in ipairs(page) do
      if string.sub(member, #prefix + 18) == id then -- "<prefix><16-digit seq> <id>"
        redis.call('ZREM', ranked, member)
        if group ~= '' and redis.call('HINCRBY', flow, 'ready ' .. group, '-1') <= 0 then
          redis.call('HDEL', flow, 'ready ' .. group)
          redis.call('ZREM', groups, group)
          redis.call('ZREM', gwait, group)
        end
        return true
      end
    end
    offset = offset + 1000
  until #page < 1000
  return false
end

local reply, deleted = {OK}, 0
local gone, values = {}, {} -- with the kept keys: the jobs cancelled, and their kept values
for i, id in ipairs(ARGV) do
  local outcome = 0
  if redis.call('HEXISTS', jobs, id) == 1 and not redis.call('ZSCORE', dead, id) then
    local value = flowing and redis.call('HGET', attrs, id)
    if redis.call('ZREM', delayed, id) == 1 or
        (value and unrank(value, id) or not value and redis.call('LREM', ready, '1', id) == 1) then
      if events_key then
        emit('cancelled', id, attempts_of(redis.call('HGET', meta, id)))
      end
      if keeping then
        gone[#gone + 1] = id
        values[#gone] = kept_cancelled(redis.call('HGET', meta, id), 0,
          redis.call('HGET', jobs, id))
      end
      redis.call('HDEL', jobs, id)
      redis.call('HDEL', meta, id)
      redis.call('HDEL', errors, id)
      if value then
        redis.call('HDEL', attrs, id)
      end
      deleted = deleted + 1
      outcome = 1
    else -- in no list but held: leased
      local value = redis.call('HGET', meta, id)
      if not meta_cancelled(value) then
        local attempts, redrives, limit = meta_get(value)
        redis.call('HSET', meta, id, meta_put(attempts, redrives, limit) .. CANCEL_MARK)
        if keeping then -- its running delivery counted, as it will be when the run ends
          gone[#gone + 1] = id
          values[#gone] = kept_cancelled(value, 1, redis.call('HGET', jobs, id))
        end
        outcome = 2
      end
    end
  end
  reply[i + 1] = outcome
end
if deleted > 0 then
  redis.call('HINCRBY', stats, 'cancelled', string.format('%d', deleted))
end
if #gone > 0 then
  keep_cancelled({completed = KEYS[13], kept = KEYS[14], results = KEYS[15]}, gone, values,
    now_ms())
end
return reply
