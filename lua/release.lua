#!lua flags=allow-oom
--[[
release: give back leased jobs that a worker took but never started (it is shutting down).
They return to the front of ready (of their kind: place.lua) and the delivery is not counted
as an attempt; a job cancelled while leased (cancel.lua) is deleted instead.

KEYS
  1   ready   LIST  ids waiting, FIFO
  2   leased  ZSET  "token:id" -> lease deadline (ms)
  3   wake    LIST  marker that blocked workers wait on
  4   jobs    HASH  id -> serialized job record
  5   meta    HASH  id -> "attempts:redrives[:limit]", ":c" after them for a cancelled job
  6   errors  HASH  id -> last error (JSON)
  7   stats   HASH  counters ("cancelled")
  8   attrs   HASH  id -> "<priority> <group>", ranked jobs only (attrs.lua)
  9   starved STRING set when max_active stopped a lease (reserve.lua): a lease ending wakes one
  10  ranked  ZSET  the ready ranked jobs (ranked.lua)
  11  flow    HASH  seq counters and per-group counts and flags (arm.lua)
  12  groups  ZSET  group -> turn: the round robin of groups that may lease now
  13  gwait   ZSET  group -> ms: groups waiting out their group rate limit
  14  events  STREAM  (optional) events (events.lua): cancelled (a cancelled job deleted)
ARGV
  2k-1  id     string   job id (k = 1..N)
  2k    token  16 hex   its lease token
  -2  events_level   integer  with the events key only, second to last: 1 = the terminal
                               transitions only, 2 = every one (events.lua)
  -1  events_maxlen  integer  with the events key only, last: the stream's bound (MAXLEN ~)
REPLY
  {0, released, lost_id...}  released counts the cancelled jobs deleted too; lost ids were not
                             held under the token given; untouched
ERRORS
  {1, message}  BAD_ARGUMENT; nothing written
]]
-- @include codes
-- generated from lua/includes/codes.lua by `make lua`: edit that file, not this block
-- Reply codes (mirrored by pyqcore.codes.Code; a test keeps the two equal).
local OK, BAD_ARGUMENT, LEASE_LOST, LOCKED, QUEUE_FULL = 0, 1, 2, 3, 4
-- @end codes
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
-- @include lease_pairs
-- generated from lua/includes/lease_pairs.lua by `make lua`: edit that file, not this block
-- ARGV from position first on as (id, token) pairs: ids, their lease members, and the count
-- of pairs. A token of the wrong shape, or a pair given twice, gets a member that no lease
-- has (""): refused, never confused with another job's lease nor settled twice.
local function lease_pairs(first)
  local ids, members, seen, n = {}, {}, {}, 0
  for i = first, #ARGV, 2 do
    n = n + 1
    local id, token = ARGV[i], ARGV[i + 1]
    local member = #token == TOKEN_LENGTH and lease_member(token, id) or ''
    if seen[member] then
      member = ''
    end
    seen[member] = true
    ids[n] = id
    members[n] = member
  end
  return ids, members, n
end
-- @end lease_pairs
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
-- @include wake
-- generated from lua/includes/wake.lua by `make lua`: edit that file, not this block
-- Leaves one marker on the wake list, so exactly one blocked worker wakes (and rechecks).
local function wake(wake_key)
  if redis.call('LLEN', wake_key) == 0 then
    redis.call('RPUSH', wake_key, '1')
  end
end
-- @end wake
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
local events_bad = events_args(13)
if events_bad then
  return {BAD_ARGUMENT, events_bad}
end

local ready, leased, wake_key = KEYS[1], KEYS[2], KEYS[3]
local jobs, meta, errors, stats = KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local attrs, starved = KEYS[8], KEYS[9]
local fk = {ready = ready, ranked = KEYS[10], flow = KEYS[11], groups = KEYS[12], gwait = KEYS[13]}
if #ARGV < 2 or #ARGV % 2 ~= 0 then
  return {BAD_ARGUMENT, 'ARGV must be (id, token) pairs, at least one'}
end

-- The delivery never started, so it leaves no history: the lease just goes.
local ids, members, n = lease_pairs(1)
local held, refused = take_leases(leased, ids, members, n)
local back = held
local values = {} -- attrs values: none on a queue that never used priorities or groups
if #held > 0 and redis.call('EXISTS', attrs, starved) > 0 then
  values = gather_chunked('HMGET', attrs, held)
  leases_ended(fk, values)
  redis.call('DEL', starved) -- the wake-up below serves a worker waiting under max_active
end
local back_values = values
-- Meta is empty unless some job has a history (HLEN is O(1)): only then look for cancel marks.
if #held > 0 and redis.call('HLEN', meta) > 0 then
  local states, cancelled = gather_chunked('HMGET', meta, held), {}
  back, back_values = {}, {}
  for i, id in ipairs(held) do
    if meta_cancelled(states[i]) then
      cancelled[#cancelled + 1] = id
      emit('cancelled', id, attempts_of(states[i]))
    else
      back[#back + 1] = id
      back_values[#back] = values[i] or false
    end
  end
  if #cancelled > 0 then
    call_chunked('HDEL', jobs, cancelled)
    call_chunked('HDEL', meta, cancelled)
    call_chunked('HDEL', errors, cancelled)
    call_chunked('HDEL', attrs, cancelled)
    redis.call('HINCRBY', stats, 'cancelled', string.format('%d', #cancelled))
  end
end
if #back > 0 then
  place(fk, back, back_values, true)
  wake(wake_key)
end
local reply = {OK, #held}
for i, id in ipairs(refused) do
  reply[i + 2] = id
end
return reply
