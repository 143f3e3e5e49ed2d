#!lua flags=allow-oom
--[[
cancel: stop jobs by id. A waiting or delayed job is deleted (it will never be delivered); a
leased (active) job is marked in meta ("attempts:redrives[:limit]:c"): its handler sees it as
job.cancelled after the next heartbeat, extend no longer renews its lease, and a failed
delivery or an expired lease deletes it instead of retrying (an ack still completes it). Dead
jobs and unknown ids are left alone. Each id costs a scan of the ready list (LREM), or for a
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
  13  events   STREAM  (optional) events (events.lua): cancelled (a job deleted)
ARGV
  k  id  string  job id (k = 1..N, N <= 100)
  -2  events_level   integer  with the events key only, second to last: 1 = the terminal
                               transitions only, 2 = every one (events.lua)
  -1  events_maxlen  integer  with the events key only, last: the stream's bound (MAXLEN ~)
REPLY
  {0, outcome...}  one per id, in order: 1 deleted (it was waiting or delayed), 2 marked (it is
                   active), 0 nothing done (unknown, dead, or already marked)
ERRORS
  {1, message}  BAD_ARGUMENT: no id, more than 100, or an empty one; nothing written
]]
-- @include codes
-- generated from lua/includes/codes.lua by `make lua`: edit that file, not this block
-- Reply codes (mirrored by pyqcore.codes.Code; a test keeps the two equal).
local OK, BAD_ARGUMENT, LEASE_LOST, LOCKED, QUEUE_FULL = 0, 1, 2, 3, 4
-- @end codes
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

-- The events arguments, if sent (taken off ARGV: what follows reads a call without events).
local events_bad = events_args(12)
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
for i, id in ipairs(ARGV) do
  local outcome = 0
  if redis.call('HEXISTS', jobs, id) == 1 and not redis.call('ZSCORE', dead, id) then
    local value = flowing and redis.call('HGET', attrs, id)
    if redis.call('ZREM', delayed, id) == 1 or
        (value and unrank(value, id) or not value and redis.call('LREM', ready, '1', id) == 1) then
      if events_key then
        emit('cancelled', id, attempts_of(redis.call('HGET', meta, id)))
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
        outcome = 2
      end
    end
  end
  reply[i + 1] = outcome
end
if deleted > 0 then
  redis.call('HINCRBY', stats, 'cancelled', string.format('%d', deleted))
end
return reply
