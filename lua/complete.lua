#!lua flags=allow-oom
--[[
complete: ack for a queue that keeps completed jobs (keep_completed, store_results). Finishes
N leased jobs as ack does (only under their current lease), then keeps each: its finish time in
completed, its record and attempts in kept, and with results its handler's return value
(serialized by the caller) in results. Then trims what is kept, oldest first, by age and by
count: at most N + 100 entries per call, so a call's work stays bounded and the kept set
shrinks faster than it grows. Queues that keep nothing use ack.lua: this costs them nothing.

KEYS
  1   leased     ZSET  "token:id" -> lease deadline (ms)
  2   jobs       HASH  id -> serialized job record
  3   meta       HASH  id -> "attempts:redrives[:limit]" (jobs with a history only)
  4   errors     HASH  id -> last error (JSON)
  5   stats      HASH  counters
  6   completed  ZSET  id -> time it completed (ms): the kept completed jobs
  7   kept       HASH  id -> "attempts:redrives:" and the job's record (this delivery counted)
  8   results    HASH  id -> the handler's return value, serialized
  9   attrs      HASH  id -> "<priority> <group>", ranked jobs only (attrs.lua)
  10  starved    STRING  set when max_active stopped a lease (reserve.lua): a lease ending wakes one
  11  flow       HASH  per-group counts and flags (arm.lua)
  12  groups     ZSET  group -> turn: the round robin of groups that may lease now
  13  gwait      ZSET  group -> ms: groups waiting out their group rate limit
  14  wake       LIST  marker that blocked workers wait on
  15  events     STREAM  (optional) events (events.lua): completed
ARGV
  1     keep_ms     integer, ms  keep a completed job this long (0: no age bound)
  2     keep_count  integer      keep at most this many (0: no count bound; pyqcore always
                                 sends one bound or both)
  3k    id          string       job id (k = 1..N)
  3k+1  token       16 hex       its lease token
  3k+2  result      bytes        its handler's return value, serialized; "" to keep none
  -2  events_level   integer  with the events key only, second to last: 1 = the terminal
                               transitions only, 2 = every one (events.lua)
  -1  events_maxlen  integer  with the events key only, last: the stream's bound (MAXLEN ~)
REPLY
  {0, acked, refused_id...}  as ack: acked = how many jobs completed; refused ids follow
ERRORS
  {1, message}  BAD_ARGUMENT; nothing written
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
-- @include take_leases
-- generated from lua/includes/take_leases.lua by `make lua`: edit that file, not this block
-- Removes the held leases among members (from lease_pairs.lua) and says whose they
-- were: the ids taken, in the order given, and the ids refused. ZADD XX CH first moves each
-- held member to score -1, a deadline no lease has, and counts them: when all are held (the
-- usual case) the count is the whole answer; otherwise the members now at -1 are exactly the
-- held ones. ZMSCORE would answer per member, but it formats each score with printf:
-- callgrind counts 12% more instructions per ack with it.
local function take_leases(leased, ids, members, n)
  local marks, held = {}, 0
  for i = 1, n do
    marks[2 * i - 1] = '-1'
    marks[2 * i] = members[i]
  end
  for i = 1, #marks, 1000 do -- slices of 500 pairs, under Lua's unpack limit
    held = held + redis.call('ZADD', leased, 'XX', 'CH', unpack(marks, i, math.min(i + 999, #marks)))
  end
  if held == n then
    call_chunked('ZREM', leased, members)
    return ids, {}
  end
  local mine, taken, gone, refused = {}, {}, {}, {}
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', leased, '-1', '-1')) do
    mine[member] = true
  end
  for i = 1, n do
    if mine[members[i]] then
      taken[#taken + 1] = ids[i]
      gone[#gone + 1] = members[i]
    else
      refused[#refused + 1] = ids[i]
    end
  end
  call_chunked('ZREM', leased, gone)
  return taken, refused
end
-- @end take_leases
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
local events_bad = events_args(14)
if events_bad then
  return {BAD_ARGUMENT, events_bad}
end

local leased, jobs, meta, errors, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local completed, kept, results = KEYS[6], KEYS[7], KEYS[8]
local keep_ms = arg_int(1, 'keep_ms', 0)
local keep_count = arg_int(2, 'keep_count', 0)
if #ARGV < 5 or (#ARGV - 2) % 3 ~= 0 then
  bad = bad or 'ARGV[3..] must be (id, token, result) triples, at least one'
end
if bad then
  return {BAD_ARGUMENT, bad}
end

-- (id, token) as lease_pairs reads them, each followed by its result.
local ids, members, values, seen, n = {}, {}, {}, {}, 0
for i = 3, #ARGV, 3 do
  n = n + 1
  local id, token = ARGV[i], ARGV[i + 1]
  local member = #token == TOKEN_LENGTH and lease_member(token, id) or ''
  if seen[member] then
    member = ''
  end
  seen[member] = true
  ids[n], members[n] = id, member
  values[n] = ARGV[i + 2]
end
local done, refused = take_leases(leased, ids, members, n)
local d = #done
if d > 0 then
  local now_arg = string.format('%d', now_ms())
  local records = gather_chunked('HMGET', jobs, done)
  local states = gather_chunked('HMGET', meta, done)
  local result_of = {}
  for i = 1, n do
    result_of[ids[i]] = values[i]
  end
  local finished, entries, outputs, none = {}, {}, {}, {}
  for i, id in ipairs(done) do
    finished[2 * i - 1] = now_arg
    finished[2 * i] = id
    entries[2 * i - 1] = id
    local attempts, redrives = meta_get(states[i])
    entries[2 * i] = meta_put(attempts + 1, redrives) .. ':' .. (records[i] or '')
    emit('completed', id, attempts + 1)
    if result_of[id] ~= '' then
      outputs[#outputs + 1] = id
      outputs[#outputs + 1] = result_of[id]
    else
      none[#none + 1] = id
    end
  end
  call_chunked('HDEL', jobs, done)
  call_chunked('HDEL', meta, done)
  call_chunked('HDEL', errors, done)
  call_chunked('ZADD', completed, finished)
  call_chunked('HSET', kept, entries)
  call_chunked('HSET', results, outputs)
  call_chunked('HDEL', results, none) -- a re-added id's earlier result is not this one's
  redis.call('HINCRBY', stats, 'completed', string.format('%d', d))
  -- Neither key exists on a queue that never used priorities, groups or max_active (ack.lua).
  if redis.call('EXISTS', KEYS[9], KEYS[10]) > 0 then
    local uncapped = leases_ended({flow = KEYS[11], groups = KEYS[12], gwait = KEYS[13]},
      gather_chunked('HMGET', KEYS[9], done))
    call_chunked('HDEL', KEYS[9], done)
    -- A worker may wait for a place under max_active, or for a group back under its limit.
    if redis.call('DEL', KEYS[10]) == 1 or uncapped then
      wake(KEYS[14])
    end
  end

  -- Trim, oldest first: by age, then by count; at most d + 100 entries per call.
  keep_trim(completed, kept, results, tonumber(now_arg), keep_ms, keep_count, d + 100)
end
local reply = {OK, d}
for i, id in ipairs(refused) do
  reply[i + 2] = id
end
return reply
