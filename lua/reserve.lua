#!lua flags=allow-oom
--[[
reserve: lease up to N ready jobs to one worker, after housekeeping that makes jobs ready:
promote due delayed jobs, and reclaim expired leases (each expired lease was a delivery, so it
counted as an attempt: a job whose last allowed delivery expired goes to the dead-letter queue;
one cancelled while leased, see cancel.lua, is deleted).
Flow control is decided here, for the whole fleet at once: a paused queue leases nothing; at
most max_active leases are held; at most rate_starts jobs start in any window of
rate_window_ms; ranked jobs (a priority or a group: ranked.lua) go by priority, and groups take
turns (arm.lua), each within its group_concurrency and group rate limit. A queue that never
used priorities, groups or pause has neither the paused nor the attrs key, and takes the plain
FIFO path; a limit of 0 is no limit and costs nothing.

KEYS
  1   ready    LIST    ids waiting, FIFO (the plain jobs)
  2   delayed  ZSET    id -> due time (ms)
  3   leased   ZSET    "token:id" -> lease deadline (ms)
  4   dead     ZSET    id -> time it died (ms)
  5   jobs     HASH    id -> serialized job record
  6   meta     HASH    id -> "attempts:redrives[:limit]" (jobs with a history or their own limit)
  7   errors   HASH    id -> last error (JSON: type, message, traceback)
  8   stats    HASH    counters
  9   wake     LIST    marker that blocked workers wait on
  10  paused   STRING  "1" while the queue is paused (pause.lua)
  11  starved  STRING  set when max_active stopped a lease: the next lease to end wakes a worker
  12  attrs    HASH    id -> "<priority> <group>", ranked jobs only (attrs.lua)
  13  ranked   ZSET    the ready ranked jobs, by group, priority and age (ranked.lua)
  14  flow     HASH    seq counters and per-group counts and flags (arm.lua)
  15  groups   ZSET    group -> turn: the round robin of groups that may lease now (arm.lua)
  16  gwait    ZSET    group -> ms: groups waiting out their group rate limit
  17  limiter  ZSET    sliding-window logs of starts (window.lua)
  18  events   STREAM  (optional) events (events.lua): started, retried, dead, cancelled
ARGV
  1   count                 integer      most jobs to lease (0 = housekeeping only)
  2   visibility_ms         integer, ms  lease length, > 0
  3   max_attempts          integer      deliveries allowed per job (max_retries + 1), >= 1 (a
                                         job added with its own max_retries keeps its limit:
                                         meta.lua)
  4   sweep_limit           integer      most delayed promotions, most expired leases and most
                                         orphans handled, 1..10000 (MAX_BATCH in
                                         pyqcore/settings.py: bounds one call)
  5   token                 16 hex       the lease token of this call's jobs: random, from the
                                         caller (a counter in Redis would repeat itself after
                                         a failover to a replica that had not seen its last
                                         values)
  6   max_active            integer      most leases held at once; 0 = no limit
  7   rate_starts           integer      most starts per window; 0 = no rate limit
  8   rate_window_ms        integer, ms  the rate limit's window, > 0 with rate_starts (else 0)
  9   group_concurrency     integer      most leases held at once per group; 0 = no limit
  10  group_rate_starts     integer      most starts per window per group; 0 = no limit
  11  group_rate_window_ms  integer, ms  its window, > 0 with group_rate_starts (else 0)
  -2  events_level   integer  with the events key only, second to last: 1 = the terminal
                               transitions only, 2 = every one (events.lua)
  -1  events_maxlen  integer  with the events key only, last: the stream's bound (MAXLEN ~)
REPLY
  {0, token, deadline_ms, wait_ms, throttle, id1, record1, attempt1, ...}
  token is the lease token of every job in this reply; deadline_ms is their lease deadline
  on the server's clock; attempt is the delivery number (1 = first). In a reply with no job
  (else -1), wait_ms is how long from now (ms, >= 0) until something could be leased without
  an add: the earliest due time of a delayed job, lease deadline, or group rate limit's next
  place (not while paused or at max_active: a resume or a lease's end wakes), -1 if none; a worker with nothing to do sleeps that long, whatever its own clock says;
  0 if plain ids are still ready though this reply has no job (see orphans): call again at once.
  throttle says what held the lease back: 0 nothing (count reached, or nothing ready), 1 RATE
  (rate_limit: nothing starts for wait_ms, whatever is added), 2 FULL (max_active leases held:
  the next to end wakes a worker), 3 GROUPS (ready jobs wait for their groups' limits), 4
  PAUSED. Ids whose record is missing (orphans: evicted, deleted) are dropped, counted in stats
  as "orphaned", and (from the plain list) more ids taken in their place, up to sweep_limit
  orphans per call.
ERRORS
  {1, message}  BAD_ARGUMENT (e.g. sweep_limit > 10000); nothing written
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
-- @include window
-- generated from lua/includes/window.lua by `make lua`: edit that file, not this block
-- Sliding-window logs of job starts, for rate_limit and group_rate_limit: in the limiter ZSET at
-- score 0, one member per start, "<owner> <ms> <tag>": owner "" for the queue's own limit, the
-- group's name for its group's; ms the start time in 15 digits, so the bytes sort by time within
-- an owner. At most `limit` starts in any window of window_ms, both ends counted: a start at now
-- is allowed while fewer than `limit` entries are >= now - window_ms. Each look first trims the
-- owner's entries older than that, so a log never holds more than `limit` entries. A log's
-- times never go back: a caller whose now is before the newest entry (the server's clock
-- stepped back; a test's clock read before another caller's) starts nothing until then, since
-- the entries it would need were trimmed by that later look.

-- How many more starts the owner's log allows now; when none, also the time (ms) the next one is.
local function window_room(key, owner, now, window_ms, limit)
  local lo, hi = '[' .. owner .. ' ', '(' .. owner .. '!'
  local newest = redis.call('ZREVRANGEBYLEX', key, hi, lo, 'LIMIT', '0', '1')[1]
  local newest_at = newest and tonumber(string.sub(newest, #owner + 2, #owner + 16))
  if newest_at and newest_at > now then
    return 0, newest_at
  end
  redis.call('ZREMRANGEBYLEX', key, lo, string.format('(%s %015d', owner, now - window_ms))
  local held = redis.call('ZLEXCOUNT', key, lo, hi)
  if held < limit then
    return limit - held, now
  end
  -- Full: a place frees up when the entry held - limit + 1 from the oldest leaves the window.
  local entry = redis.call('ZRANGEBYLEX', key, lo, hi, 'LIMIT', string.format('%d', held - limit), '1')[1]
  return 0, tonumber(string.sub(entry, #owner + 2, #owner + 16)) + window_ms + 1
end

-- Logs k starts of the owner at now; tag makes the members unique (the reserve's lease token).
local function window_add(key, owner, now, tag, k)
  local prefix, entries = string.format('%s %015d %s:', owner, now, tag), {}
  for i = 1, k do
    entries[2 * i - 1] = '0'
    entries[2 * i] = prefix .. i
  end
  call_chunked('ZADD', key, entries)
end
-- @end window
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

-- The leased ZSET also holds PIN, scored +inf, which is never a lease. PIN is longer than
-- zset-max-listpack-value (64 bytes by default), so the set is a skiplist + hash table from its
-- first ZADD on and never becomes a listpack: in a listpack, each member a batch adds or checks
-- costs a scan of the whole set (measured with callgrind: half the Redis CPU of a job's life
-- cycle, with batches of 100). Counting leases is ZCOUNT leased -inf (+inf (counts.lua). Its
-- 17th character is not ':', so no "token:id" (lease.lua) spells it. Its text is stored data:
-- it must never change (it says lease.lua, where it was first defined).
local PIN = '~pin: not a lease; a member this long keeps the leased set a skiplist (see lease.lua)~'

-- The id of a lease member "token:id" (lease.lua).
local function lease_id(member)
  return string.sub(member, TOKEN_LENGTH + 2)
end

-- Why nothing (more) was leased (the reply's throttle; pyqcore.codes.Throttle mirrors it).
local NONE, RATE, FULL, GROUPS, PAUSED = 0, 1, 2, 3, 4

-- The events arguments, if sent (taken off ARGV: what follows reads a call without events).
local events_bad = events_args(17)
if events_bad then
  return {BAD_ARGUMENT, events_bad}
end

local ready, delayed, leased, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local jobs, meta, errors, stats, wake_key = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local paused_key, starved, attrs, ranked, limiter = KEYS[10], KEYS[11], KEYS[12], KEYS[13], KEYS[17]
local fk = {ready = ready, ranked = ranked, flow = KEYS[14], groups = KEYS[15], gwait = KEYS[16]}
local count = arg_int(1, 'count', 0)
local visibility = arg_int(2, 'visibility_ms', 1)
local max_attempts = arg_int(3, 'max_attempts', 1)
local sweep = arg_int(4, 'sweep_limit', 1, 10000)
local token = arg_token(5, 'token')
local max_active = arg_int(6, 'max_active', 0)
local rate_starts = arg_int(7, 'rate_starts', 0)
local rate_window = arg_int(8, 'rate_window_ms', 0)
local group_cap = arg_int(9, 'group_concurrency', 0)
local group_starts = arg_int(10, 'group_rate_starts', 0)
local group_window = arg_int(11, 'group_rate_window_ms', 0)
if (rate_starts > 0) ~= (rate_window > 0) or (group_starts > 0) ~= (group_window > 0) then
  bad = bad or 'ARGV[7..8] and ARGV[10..11]: a rate limit needs both its starts and its window'
end
if bad then
  return {BAD_ARGUMENT, bad}
end

local now = now_ms()
local now_arg, sweep_arg = string.format('%d', now), ARGV[4]
-- A queue that never used priorities, groups or pause has neither key: one EXISTS says so,
-- and then every step below is the plain FIFO queue's.
local flowing = redis.call('EXISTS', paused_key, attrs) > 0
local function attrs_of(ids) -- each id's attrs value, false for a plain job
  return flowing and gather_chunked('HMGET', attrs, ids) or {}
end

-- Promote delayed jobs that are due, oldest due first, to the back of ready (of their kind).
-- Numbers go to redis.call as strings (formatted once, or as they came in): Redis formats a
-- Lua number argument with printf('%.17g'), a few thousand instructions each (callgrind).
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now_arg, 'LIMIT', '0', sweep_arg)
if #due > 0 then
  place(fk, due, attrs_of(due), false)
  call_chunked('ZREM', delayed, due)
end

-- Reclaim expired leases: back to the front of ready (of their kind), or to the dead-letter
-- queue. An expired lease was a delivery, so it counts as an attempt.
local expired = redis.call('ZRANGEBYSCORE', leased, '-inf', now_arg, 'LIMIT', '0', sweep_arg)
if #expired > 0 then
  call_chunked('ZREM', leased, expired)
  local ids = {}
  for i, member in ipairs(expired) do
    ids[i] = lease_id(member)
  end
  local states = gather_chunked('HMGET', meta, ids)
  local values = attrs_of(ids)
  local history, back, back_values = {}, {}, {}
  local cancelled = {}
  for i, id in ipairs(ids) do
    local attempts, redrives, limit = meta_get(states[i])
    attempts = attempts + 1
    history[2 * i - 1] = id
    history[2 * i] = meta_put(attempts, redrives, limit)
    limit = limit or max_attempts -- the job's own limit first (meta.lua)
    if meta_cancelled(states[i]) then -- cancelled while leased (cancel.lua): not retried
      cancelled[#cancelled + 1] = id
      emit('cancelled', id, attempts)
    elseif attempts >= limit then
      bury(dead, errors, stats, id, now_arg, cjson.encode({
        type = 'LeaseExpired',
        message = 'lease expired during delivery ' .. attempts .. ' of ' .. limit,
        traceback = '',
      }))
      emit('dead', id, attempts)
    else
      back[#back + 1] = id
      back_values[#back] = values[i]
      emit('retried', id, attempts)
    end
  end
  call_chunked('HSET', meta, history)
  if #cancelled > 0 then
    call_chunked('HDEL', jobs, cancelled)
    call_chunked('HDEL', meta, cancelled)
    call_chunked('HDEL', errors, cancelled)
    if flowing then
      call_chunked('HDEL', attrs, cancelled)
    end
    redis.call('HINCRBY', stats, 'cancelled', string.format('%d', #cancelled))
  end
  if flowing then
    leases_ended(fk, values)
  end
  place(fk, back, back_values, true)
  redis.call('HINCRBY', stats, 'reclaimed', string.format('%d', #expired))
end

-- How many jobs may start now: count, within max_active and rate_limit.
local budget, throttle, wait = count, NONE, nil
if budget > 0 and flowing and redis.call('EXISTS', paused_key) == 1 then
  budget, throttle = 0, PAUSED
end
if budget > 0 and max_active > 0 then
  local room = max_active - math.max(redis.call('ZCARD', leased) - 1, 0) -- less PIN
  if room <= 0 then
    budget, throttle = 0, FULL
    redis.call('SET', starved, '1')
  elseif room < budget then
    budget = room
  end
end
if budget > 0 and rate_starts > 0 then
  local room, free_at = window_room(limiter, '', now, rate_window, rate_starts)
  if room == 0 then
    budget, throttle, wait = 0, RATE, free_at - now
  elseif room < budget then
    budget = room
  end
end

-- Ready jobs with no group, best first: ranked with a priority above 0, the ready LIST (0),
-- ranked below 0. Appends their ids to taken and their ranked members to members.
local HIGH_END = string.format('( %04d', BAND_ZERO) -- the jobs with no group and priority > 0
local function take_ungrouped(n, taken, members)
  local high = redis.call('ZRANGEBYLEX', ranked, '[ ', HIGH_END, 'LIMIT', '0', string.format('%d', n))
  local plain = #high < n and redis.call('LPOP', ready, string.format('%d', n - #high)) or {}
  local low = #high + #plain < n and redis.call('ZRANGEBYLEX', ranked, HIGH_END, '(!', 'LIMIT', '0',
    string.format('%d', n - #high - #plain)) or {}
  for _, part in ipairs({high, plain, low}) do
    for _, item in ipairs(part) do
      if part == plain then
        taken[#taken + 1] = item
      else
        taken[#taken + 1] = string.match(item, '^[^ ]* %d+ %d+ (.*)$')
        members[#members + 1] = item
      end
    end
  end
end

-- The round robin (arm.lua): up to n jobs, one per group per turn, each group within its
-- limits; groups served go to the back, groups that may not lease now leave the round robin.
-- Returns the ids in delivery order, each one's group ('' = none), and the ranked members
-- taken; done(delivered) then books the leases (delivered: group -> jobs delivered).
local function take_in_turn(n)
  local due_groups = redis.call('ZRANGEBYSCORE', fk.gwait, '-inf', now_arg)
  if #due_groups > 0 then
    call_chunked('ZREM', fk.gwait, due_groups)
    for _, g in ipairs(due_groups) do
      arm(fk, g)
    end
  end
  local taken, members, group_of = {}, {}, {}
  if redis.call('ZCARD', fk.groups) == 0 then -- no group may lease now
    take_ungrouped(n, taken, members)
    return taken, group_of, members, nil
  end
  local ungrouped = redis.call('LLEN', ready) + redis.call('ZLEXCOUNT', ranked, '[ ', '(!')
  if ungrouped > 0 then -- the jobs with no group take their turns too
    redis.call('ZADD', fk.groups, 'NX', string.format('%d', next_turn(fk.groups)), '')
  end
  -- The groups at the head of the round robin, n at a time, until they allow n jobs or none is
  -- left: a group armed by an add after it reached a limit with nothing ready (its rate limit)
  -- may lease nothing, takes no turn, and leaves the round robin below.
  local heads, allow, ready_n, active_n, free_at = {}, {}, {}, {}, {}
  local allowed, from = 0, 0
  repeat
    local more = redis.call('ZRANGE', fk.groups, string.format('%d', from), string.format('%d', from + n - 1))
    local fields = {}
    for j, g in ipairs(more) do
      fields[2 * j - 1] = 'ready ' .. g
      fields[2 * j] = 'active ' .. g
    end
    local held = gather_chunked('HMGET', fk.flow, fields)
    for j, g in ipairs(more) do
      local i = #heads + 1
      heads[i] = g
      if g == '' then
        ready_n[i], active_n[i], allow[i] = ungrouped, 0, ungrouped
      else
        ready_n[i], active_n[i] = tonumber(held[2 * j - 1]) or 0, tonumber(held[2 * j]) or 0
        allow[i] = ready_n[i]
        if group_cap > 0 then
          allow[i] = math.min(allow[i], group_cap - active_n[i])
        end
        if group_starts > 0 then
          local room
          room, free_at[i] = window_room(limiter, g, now, group_window, group_starts)
          allow[i] = math.min(allow[i], room)
        end
      end
      allowed = allowed + math.max(allow[i], 0)
    end
    from = from + n
  until allowed >= n or #more < n
  -- One job per group per turn, until n or every group's allowance is spent.
  local turns, take, left, more = {}, {}, n, true
  for i = 1, #heads do
    take[i] = 0
  end
  while left > 0 and more do
    more = false
    for i = 1, #heads do
      if left > 0 and take[i] < allow[i] then
        take[i] = take[i] + 1
        turns[#turns + 1] = i
        left = left - 1
        more = true
      end
    end
  end
  local got = {}
  for i, g in ipairs(heads) do
    got[i] = {}
    if take[i] > 0 and g == '' then
      take_ungrouped(take[i], got[i], members)
    elseif take[i] > 0 then
      for _, m in ipairs(redis.call('ZRANGEBYLEX', ranked, '[' .. g .. ' ', '(' .. g .. '!', 'LIMIT', '0',
          string.format('%d', take[i]))) do
        got[i][#got[i] + 1] = string.match(m, '^[^ ]* %d+ %d+ (.*)$')
        members[#members + 1] = m
      end
      count_add(fk.flow, 'ready ' .. g, -#got[i])
    end
  end
  local next_of, last_turn = {}, {}
  for t, i in ipairs(turns) do
    next_of[i] = (next_of[i] or 0) + 1
    local id = got[i][next_of[i]]
    if id then
      taken[#taken + 1] = id
      group_of[#taken] = heads[i]
      last_turn[i] = t
    end
  end
  local function done(delivered)
    -- Groups served go to the back, in the order of their last turn; a group leaves the round
    -- robin when it has nothing ready, reaches group_concurrency or its rate limit.
    local order = {}
    for i = 1, #heads do
      order[i] = i
    end
    table.sort(order, function(a, b) return (last_turn[a] or 0) < (last_turn[b] or 0) end)
    local turn = next_turn(fk.groups)
    for _, i in ipairs(order) do
      local g, started = heads[i], delivered[heads[i]] or 0
      if g ~= '' and started > 0 then
        count_add(fk.flow, 'active ' .. g, started)
        if group_starts > 0 then
          window_add(limiter, g, now, token, started)
        end
      end
      local room
      if g ~= '' and group_starts > 0 then
        room, free_at[i] = window_room(limiter, g, now, group_window, group_starts)
      end
      if g ~= '' and group_cap > 0 and active_n[i] + started >= group_cap then
        redis.call('ZREM', fk.groups, g) -- flagged even with nothing ready: an add keeps it out
        local waiting = ready_n[i] - #got[i] > 0
        if redis.call('HSETNX', fk.flow, 'capped ' .. g, waiting and '1' or '0') == 1 and waiting then
          redis.call('HINCRBY', fk.flow, 'capped', '1')
        end
      elseif ready_n[i] - #got[i] <= 0 then
        redis.call('ZREM', fk.groups, g)
      elseif room == 0 then
        redis.call('ZREM', fk.groups, g)
        redis.call('ZADD', fk.gwait, string.format('%d', free_at[i]), g)
      elseif last_turn[i] then
        redis.call('ZADD', fk.groups, 'XX', string.format('%d', turn), g)
        turn = turn + 1
      end
    end
  end
  return taken, group_of, members, done
end

local reply = {OK, token, now + visibility, -1, NONE}
local ids, group_of, members, done
if budget > 0 and not flowing then
  ids = redis.call('LPOP', ready, budget == count and ARGV[1] or string.format('%d', budget))
elseif budget > 0 then
  ids, group_of, members, done = take_in_turn(budget)
  call_chunked('ZREM', ranked, members)
end
local delivered = {} -- group ('' = none) -> jobs delivered, when groups took turns
local ready_left -- plain ids are still ready after this call
if ids and #ids > 0 then
  local deadline = string.format('%d', now + visibility) -- formatted once, not per job
  local lease, n, r, orphans, asked = {'inf', PIN}, 2, 5, {}, budget
  while ids do
    local records = gather_chunked('HMGET', jobs, ids)
    -- Jobs with a history are few (meta is empty unless deliveries failed or expired): HLEN is
    -- O(1), and spares a lookup per job when there is none.
    local states = redis.call('HLEN', meta) > 0 and gather_chunked('HMGET', meta, ids) or {}
    -- The hot loop: explicit indexes, since #t costs a search on every append.
    for i, id in ipairs(ids) do
      if records[i] then
        n = n + 2
        lease[n - 1] = deadline
        lease[n] = lease_member(token, id)
        reply[r + 1] = id
        reply[r + 2] = records[i]
        reply[r + 3] = meta_get(states[i]) + 1 -- this delivery's number
        r = r + 3
        if group_of then
          local g = group_of[i] or ''
          delivered[g] = (delivered[g] or 0) + 1
        end
      else
        orphans[#orphans + 1] = id
      end
    end
    -- Orphans took places: take as many ids again while the plain list may hold more (the
    -- pop was full), up to sweep_limit orphans per call.
    local short = budget - (r - 5) / 3
    ids = not group_of and short > 0 and #ids == asked and #orphans < sweep and
      redis.call('LPOP', ready, string.format('%d', short))
    asked = short
  end
  call_chunked('ZADD', leased, lease) -- PIN is set again each time: one ZADD, no extra call
  if events_level == 2 then -- each job leased: "started", with its delivery number
    for i = 6, r, 3 do
      emit('started', reply[i], reply[i + 2])
    end
  end
  if #orphans > 0 then -- ids whose record is gone: nothing to deliver, drop their history
    call_chunked('HDEL', meta, orphans)
    call_chunked('HDEL', errors, orphans)
    if flowing then
      call_chunked('HDEL', attrs, orphans)
    end
    redis.call('HINCRBY', stats, 'orphaned', string.format('%d', #orphans))
  end
  if rate_starts > 0 and r > 5 then
    window_add(limiter, '', now, token, (r - 5) / 3)
  end
  -- More ready work than this worker took, and no limit held it back: pass the wake-up on to
  -- another blocked worker.
  ready_left = redis.call('LLEN', ready) > 0
  if budget == count and (ready_left or flowing and
      (redis.call('ZCARD', fk.groups) > 0 or redis.call('ZLEXCOUNT', ranked, '[ ', '(!') > 0)) then
    wake(wake_key)
  end
end
if done then
  done(delivered)
end
if #reply == 5 and ids and (redis.call('ZCARD', fk.gwait) > 0 or redis.call('HEXISTS', fk.flow, 'capped') == 1) then
  throttle = GROUPS -- ready jobs wait for their groups' limits
end

-- For a worker given nothing to do: how long until something becomes ready without an
-- enqueue, from now (so the worker needs no clock of its own to sleep). (A reply with jobs
-- skips it: two ZRANGE WITHSCORES, each score printf'd and parsed back, were a fifth of a
-- one-job reserve.) Under the rate limit, the wait is the limit's: nothing starts sooner. 0
-- when plain ids are ready now, though this call took only orphans: the caller calls again at
-- once instead of taking the queue for empty.
reply[5] = throttle
if #reply == 5 then
  if wait then
    reply[4] = math.max(0, wait)
  elseif ready_left then
    reply[4] = 0
  else
    local first_due = redis.call('ZRANGE', delayed, '0', '0', 'WITHSCORES')[2]
    local first_deadline = redis.call('ZRANGE', leased, '0', '0', 'WITHSCORES')[2] -- inf: only PIN
    local next_event = math.min(tonumber(first_due) or math.huge, tonumber(first_deadline) or math.huge)
    -- A group's rate window matters only when jobs may start: paused or at max_active,
    -- nothing starts before a resume or a lease's end, which wake a worker (a group whose
    -- window passed meanwhile would make an idle worker call again every 10 ms).
    if flowing and throttle ~= PAUSED and throttle ~= FULL then
      next_event = math.min(next_event, tonumber(redis.call('ZRANGE', fk.gwait, '0', '0', 'WITHSCORES')[2]) or math.huge)
    end
    if next_event ~= math.huge then
      reply[4] = math.max(0, next_event - now)
    end
  end
end
return reply
