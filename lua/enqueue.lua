--[[
enqueue: store N jobs and make them ready (or delayed) in one atomic call. A plain add sends
KEYS 1-6; a ranked add (jobs with a priority or a group) also sends the optional KEYS 7-11, and
its ARGV ends with the priority and the group.

KEYS
  1   ready    LIST  ids waiting, FIFO
  2   delayed  ZSET  id -> due time (ms)
  3   jobs     HASH  id -> serialized job record
  4   stats    HASH  counters; field "added" also numbers the queue's automatic ids
  5   wake     LIST  marker that blocked workers wait on
  6   meta     HASH  id -> "attempts:redrives:limit": written only with max_attempts > 0
  7   attrs    HASH  (optional) id -> "<priority> <group>", ranked jobs only (attrs.lua)
  8   ranked   ZSET  (optional) the ready ranked jobs (ranked.lua)
  9   flow     HASH  (optional) seq counters and per-group counts and flags (arm.lua)
  10  groups   ZSET  (optional) group -> turn: the round robin of groups that may lease now
  11  gwait    ZSET  (optional) group -> ms: groups waiting out their group rate limit
  12  events   STREAM  (optional) events (events.lua): the last key sent (a plain add's 7th)
ARGV
  1        due           string       when the jobs are due, on the server's clock: "0" = ready
                                      now (no clock read); "<ms>" = that many ms from now
                                      (delay=); "@<ms>" = at that time, ms since the epoch
                                      (at=), ready now if it has passed
  2        id_prefix     string       put before numbered ids ("" = none; "3-" in partition 3)
  3        n             integer      how many jobs (>= 1)
  4        max_attempts  integer      deliveries the jobs allow (their max_retries + 1), kept
                                      in meta for fail and reserve; 0 = the queue's (nothing
                                      written)
  4+k      record        bytes        job k's serialized record, stored as is (k = 1..n)
  4+n+k    id            string       job k's id, optional: give all n or none; "" or absent =
                                      take the queue's next number (so a batch of automatic ids
                                      sends no id at all: half the arguments); a ranked add
                                      gives all n
  5+2n     priority      integer      a ranked add only: the jobs' priority, -1000..1000
                                      (higher leased first)
  6+2n     group         string       a ranked add only: the jobs' group, "" = none (no space)
  5+2n     max_ready     integer      optional, last, after all n ids (a ranked add: after its
                                      group): refuse the call if it would take the jobs
                                      waiting (ready + delayed) past this many (>= 1); absent
                                      = no limit (so an add without a limit sends what it
                                      always did, and pays nothing for it). A plain add counts
                                      the plain ready list, a ranked add the ranked jobs too
  -2       events_level  integer      with the events key only, second to last: 1 or 2 (an
                                      add writes "added" at level 2 only; events.lua)
  -1       events_maxlen integer      with the events key only, last: the stream's bound
                                      (XADD MAXLEN ~), >= 1
REPLY
  id                       for a plain add (n = 1, no id given, due 0, max_attempts 0): the id
                           it got,
                           alone (a bulk string)
  {0, autos, d1, d2, ...}  otherwise: autos = the ids given to the automatic ids, in order,
                           joined by ","
                           (one string, cheap to send and split; a number that a custom id
                           already took gets a suffix: "N~1"); d1, d2, ... = positions
                           (1-based) of jobs whose custom id already existed: idempotent
                           add, that job was skipped and the existing one left untouched
ERRORS
  {1, message}  BAD_ARGUMENT: bad due, n, max_attempts or max_ready, or not n records and
                then 0 or n ids (a ranked add: n ids, a priority and a group), and max_ready;
                bad events_level or events_maxlen; nothing written
  {4, message}  QUEUE_FULL: ready + delayed + n > max_ready (duplicates count: they are
                found later); nothing written
  Redis's own OOM error when used_memory > maxmemory as the call starts: its first write is
  refused, so nothing is written. A call that starts is never stopped: one call is
  all-or-nothing (a batch of several calls is not: pyqcore checks room first).
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
-- @include wake
-- generated from lua/includes/wake.lua by `make lua`: edit that file, not this block
-- Leaves one marker on the wake list, so exactly one blocked worker wakes (and rechecks).
local function wake(wake_key)
  if redis.call('LLEN', wake_key) == 0 then
    redis.call('RPUSH', wake_key, '1')
  end
end
-- @end wake

-- A plain add (one job, an automatic id, ready now): the three commands a numbered add needs
-- and nothing else, before the checks and helpers the other calls need are even set up, and
-- the id alone as the reply (a table reply costs Redis more than the three commands' own
-- work; bench/README.md). It does exactly what the general path below does for these ARGV.
-- With the events stream (level 2 and a bound of up to 15 digits: what pyqcore sends; other
-- events arguments take the general path, which checks them) it also writes the entry.
if #ARGV == 5 and #KEYS == 6 and ARGV[1] == '0' and ARGV[3] == '1' and ARGV[4] == '0' or
    #KEYS == 7 and #ARGV == 7 and ARGV[1] == '0' and ARGV[3] == '1' and ARGV[4] == '0' and
    ARGV[6] == '2' and #ARGV[7] <= 15 and string.match(ARGV[7], '^[1-9]%d*$') then
  local base = ARGV[2] .. string.format('%d', redis.call('HINCRBY', KEYS[4], 'added', '1'))
  local id, retry = base, 0
  while redis.call('HSETNX', KEYS[3], id, ARGV[5]) == 0 do -- a custom id took this number
    retry = retry + 1
    id = base .. '~' .. retry
  end
  if redis.call('RPUSH', KEYS[1], id) == 1 then -- the list was empty: workers may be blocked
    wake(KEYS[5])
  end
  if #KEYS == 7 then -- as events.lua's emit writes it
    redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[7], '*', 'event', 'added', 'id', id,
      'attempt', '0')
  end
  return id
end

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
local events_bad = events_args(#KEYS > 11 and 11 or 6)
if events_bad then
  return {BAD_ARGUMENT, events_bad}
end

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

local ready, delayed, jobs, stats, wake_key, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
-- due: a delay in ms, or "@" and an absolute due time (ms since the epoch)
local due_at = string.sub(ARGV[1] or '', 1, 1) == '@'
if due_at then
  ARGV[1] = string.sub(ARGV[1], 2)
end
local delay = arg_int(1, due_at and 'due (@ms)' or 'due (delay ms)', 0)
local id_prefix = ARGV[2] or ''
local n = arg_int(3, 'n', 1)
local max_attempts = arg_int(4, 'max_attempts', 0)
local after = #ARGV - 4 - n -- after the records: nothing, the n ids, or the ids and max_ready
local ranked_add = #KEYS >= 11 -- a priority or a group: the keys and ARGV that go with it
local with_ids, max_ready, priority, group
if ranked_add then -- the n ids, the priority and the group, then max_ready (optional)
  with_ids = after == n + 2 or after == n + 3
  max_ready = after == n + 3 and arg_int(7 + 2 * n, 'max_ready', 1) or 0
  priority = arg_int(5 + 2 * n, 'priority', -BAND_ZERO, BAND_ZERO)
  group = ARGV[6 + 2 * n]
  if not with_ids then
    bad = bad or string.format('ARGV[5..] must be %d records, %d ids, a priority and a group '
      .. '(then max_ready, optional), got %d values', n, n, #ARGV - 4)
  elseif string.find(group, '[%s%c]') or priority == 0 and group == '' then
    bad = bad or string.format('ARGV[%d] group must hold no space (and a plain add sends no '
      .. 'ranking), got %q', 6 + 2 * n, group)
  end
else
  with_ids = after == n or after == n + 1
  max_ready = after == n + 1 and arg_int(5 + 2 * n, 'max_ready', 1) or 0
  if not (with_ids or after == 0) then
    bad = bad or string.format('ARGV[5..] must be %d records and then 0 or %d ids (then '
      .. 'max_ready, optional), got %d values', n, n, #ARGV - 4)
  end
end
if bad then
  return {BAD_ARGUMENT, bad}
end
if max_ready > 0 then
  local waiting = redis.call('LLEN', ready) + redis.call('ZCARD', delayed) +
    (ranked_add and redis.call('ZCARD', KEYS[8]) or 0)
  if waiting + n > max_ready then
    return {QUEUE_FULL, string.format('%d jobs are waiting (ready + delayed): %d more would pass '
      .. 'max_ready=%d', waiting, n, max_ready)}
  end
end
local due -- nil: ready now; else the due time (ms, the server's clock)
if due_at then
  local now = now_ms()
  due = delay > now and delay or nil -- a time that has passed: ready now
elseif delay > 0 then
  due = now_ms() + delay
end

local ids_at = 4 + n -- with_ids: ARGV[ids_at + k] is job k's id as given ("" = automatic)

-- Every job's id: custom ones as given, automatic ones numbered from a block of the queue's
-- counter (one HINCRBY for the call).
local autos = n
if with_ids then
  autos = 0
  for k = 1, n do
    if ARGV[ids_at + k] == '' then
      autos = autos + 1
    end
  end
end
-- The stats field "added" counts the jobs added and numbers the automatic ids: a call takes a
-- number for each automatic id up front (one HINCRBY that is also the count of a plain add)
-- and adds its fresh custom-id jobs at the end. An automatic id that a custom id already took
-- becomes "N~1" (then "N~2", ...): no number is skipped, so the count stays exact and the next
-- automatic id does not collide in turn.
-- (ARGV[3] when every id is automatic: a Lua number argument would be printf'd by Redis.)
local number = autos > 0 and redis.call('HINCRBY', stats, 'added', autos == n and ARGV[3] or autos) - autos or 0
local customs = 0

local fresh, numbered, reply = {}, {}, {OK, ''}
if n == 1 then
  -- One job (add): HSETNX checks the id and stores the record in one call.
  local given = with_ids and ARGV[ids_at + 1] or ''
  local id = given ~= '' and given or id_prefix .. string.format('%d', number + 1)
  local base, retry = id, 0
  while redis.call('HSETNX', jobs, id, ARGV[5]) == 0 do
    if given ~= '' then -- idempotent add: the job with this id stays as it is
      reply[3] = 1
      id = nil
      break
    end
    retry = retry + 1
    id = base .. '~' .. retry
  end
  if id then
    fresh[1] = id
    if given == '' then
      numbered[1] = id
    else
      customs = 1
    end
  end
else
  local ids = {}
  for k = 1, n do
    local id = with_ids and ARGV[ids_at + k] or ''
    if id == '' then
      number = number + 1
      id = id_prefix .. string.format('%d', number)
    end
    ids[k] = id
  end
  local existing = gather_chunked('HMGET', jobs, ids)
  -- Custom ids first, so an automatic id never takes one given in the same call; then every
  -- job in the caller's order. Explicit indexes in the per-job loops: #t searches each time.
  local taken, kept, fields = {}, {}, {}
  local f, a, d = 0, 0, 2
  if with_ids then
    for k = 1, n do
      local id = ARGV[ids_at + k]
      if id ~= '' then
        if taken[id] or existing[k] then -- idempotent add: the job with this id stays as it is
          d = d + 1
          reply[d] = k
        else
          taken[id] = true
          kept[k] = id
          customs = customs + 1
        end
      end
    end
  end
  for k = 1, n do
    local id = kept[k]
    if not with_ids or ARGV[ids_at + k] == '' then
      local retry = 0
      id = ids[k]
      while taken[id] or existing[k] do
        retry = retry + 1
        id = ids[k] .. '~' .. retry
        existing[k] = redis.call('HEXISTS', jobs, id) == 1
      end
      taken[id] = true
      a = a + 1
      numbered[a] = id
    end
    if id then
      f = f + 1
      fresh[f] = id
      fields[2 * f - 1] = id
      fields[2 * f] = ARGV[4 + k]
    end
  end
  call_chunked('HSET', jobs, fields)
end
reply[2] = table.concat(numbered, ',')

if #fresh > 0 then
  if max_attempts > 0 then -- the jobs' own limit, for fail and reserve's reclaim (meta.lua)
    put_limits(meta, fresh, ARGV[4])
  end
  local values
  if ranked_add then -- a ranked job's attrs entry says where it waits while ready (place.lua)
    local value, fields = string.format('%d ', priority) .. group, {}
    values = {}
    for i, id in ipairs(fresh) do
      fields[2 * i - 1] = id
      fields[2 * i] = value
      values[i] = value
    end
    call_chunked('HSET', KEYS[7], fields)
  end
  if not due and ranked_add then
    place({ready = ready, ranked = KEYS[8], flow = KEYS[9], groups = KEYS[10], gwait = KEYS[11]},
      fresh, values, false)
    wake(wake_key)
  elseif not due then
    push_ready(ready, wake_key, fresh)
  else
    -- Formatted once: Redis would printf a Lua number argument for every job.
    local score, scored = string.format('%d', due), {}
    for i, id in ipairs(fresh) do
      scored[2 * i - 1] = score
      scored[2 * i] = id
    end
    call_chunked('ZADD', delayed, scored)
    wake(wake_key) -- a sleeping worker must learn of a due time sooner than it planned for
  end
  if events_key then
    for _, id in ipairs(fresh) do
      emit('added', id, '0')
    end
  end
end
if customs > 0 then
  redis.call('HINCRBY', stats, 'added', string.format('%d', customs))
end
return reply
