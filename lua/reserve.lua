#!lua flags=allow-oom
--[[
reserve: lease up to N ready jobs to one worker, after housekeeping that makes jobs ready:
promote due delayed jobs, and reclaim expired leases (each expired lease was a delivery, so it
counted as an attempt: a job whose last allowed delivery expired goes to the dead-letter queue;
one cancelled while leased, see cancel.lua, is deleted).

KEYS
  1  ready    LIST  ids waiting, FIFO
  2  delayed  ZSET  id -> due time (ms)
  3  leased   ZSET  "token:id" -> lease deadline (ms)
  4  dead     ZSET  id -> time it died (ms)
  5  jobs     HASH  id -> serialized job record
  6  meta     HASH  id -> "attempts:redrives[:limit]" (jobs with a history or their own limit)
  7  errors   HASH  id -> last error (JSON: type, message, traceback)
  8  stats    HASH  counters
  9  wake     LIST  marker that blocked workers wait on
ARGV
  1  count         integer      most jobs to lease (0 = housekeeping only)
  2  visibility_ms integer, ms  lease length, > 0
  3  max_attempts  integer      deliveries allowed per job (max_retries + 1), >= 1 (a job
                                added with its own max_retries keeps its limit: meta.lua)
  4  sweep_limit   integer      most delayed promotions, most expired leases and most
                                orphans handled, 1..10000 (MAX_BATCH in pyqcore/settings.py:
                                bounds one call)
  5  token         16 hex       the lease token of this call's jobs: random, from the caller
                                (a counter in Redis would repeat itself after a failover to
                                a replica that had not seen its last values)
REPLY
  {0, token, deadline_ms, wait_ms, id1, record1, attempt1, ...}
  token is the lease token of every job in this reply; deadline_ms is their lease deadline
  on the server's clock; attempt is the delivery number (1 = first); wait_ms, in a reply with
  no job only (else -1), is how long from now (ms, >= 0) until the earliest due time of a
  delayed job or lease deadline, -1 if none: a worker with nothing to do sleeps that long,
  whatever its own clock says; 0 if ids are still ready though this reply has no job (see
  orphans): call again at once. Ids whose record is missing (orphans: evicted, deleted) are
  dropped, counted in stats as "orphaned", and more ids taken in their place, up to
  sweep_limit orphans per call.
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

local ready, delayed, leased, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local jobs, meta, errors, stats, wake_key = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local count = arg_int(1, 'count', 0)
local visibility = arg_int(2, 'visibility_ms', 1)
local max_attempts = arg_int(3, 'max_attempts', 1)
local sweep = arg_int(4, 'sweep_limit', 1, 10000)
local token = arg_token(5, 'token')
if bad then
  return {BAD_ARGUMENT, bad}
end

-- Promote delayed jobs that are due, oldest due first, to the back of ready.
-- Numbers go to redis.call as strings (formatted once, or as they came in): Redis formats a
-- Lua number argument with printf('%.17g'), a few thousand instructions each (callgrind).
local now = now_ms()
local now_arg, sweep_arg = string.format('%d', now), ARGV[4]
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now_arg, 'LIMIT', '0', sweep_arg)
if #due > 0 then
  call_chunked('RPUSH', ready, due)
  call_chunked('ZREM', delayed, due)
end

-- Reclaim expired leases: back to the front of ready, or to the dead-letter queue. An expired
-- lease was a delivery, so it counts as an attempt.
local expired = redis.call('ZRANGEBYSCORE', leased, '-inf', now_arg, 'LIMIT', '0', sweep_arg)
if #expired > 0 then
  call_chunked('ZREM', leased, expired)
  local ids = {}
  for i, member in ipairs(expired) do
    ids[i] = lease_id(member)
  end
  local states = gather_chunked('HMGET', meta, ids)
  local history, back = {}, {}
  local cancelled = {}
  for i, id in ipairs(ids) do
    local attempts, redrives, limit = meta_get(states[i])
    attempts = attempts + 1
    history[2 * i - 1] = id
    history[2 * i] = meta_put(attempts, redrives, limit)
    limit = limit or max_attempts -- the job's own limit first (meta.lua)
    if meta_cancelled(states[i]) then -- cancelled while leased (cancel.lua): not retried
      cancelled[#cancelled + 1] = id
    elseif attempts >= limit then
      bury(dead, errors, stats, id, now_arg, cjson.encode({
        type = 'LeaseExpired',
        message = 'lease expired during delivery ' .. attempts .. ' of ' .. limit,
        traceback = '',
      }))
    else
      back[#back + 1] = id
    end
  end
  call_chunked('HSET', meta, history)
  if #cancelled > 0 then
    call_chunked('HDEL', jobs, cancelled)
    call_chunked('HDEL', meta, cancelled)
    call_chunked('HDEL', errors, cancelled)
    redis.call('HINCRBY', stats, 'cancelled', string.format('%d', #cancelled))
  end
  if #back > 0 then
    -- LPUSH puts each id in front of the previous one: push newest first to keep their order.
    local reversed = {}
    for i = #back, 1, -1 do
      reversed[#reversed + 1] = back[i]
    end
    call_chunked('LPUSH', ready, reversed)
  end
  redis.call('HINCRBY', stats, 'reclaimed', string.format('%d', #expired))
end

local reply = {OK, token, now + visibility, -1}
local ids = count > 0 and redis.call('LPOP', ready, ARGV[1])
local ready_left -- ids are still ready after this call
if ids then
  local deadline = string.format('%d', now + visibility) -- formatted once, not per job
  local lease, n, r, orphans, asked = {'inf', PIN}, 2, 4, {}, count
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
      else
        orphans[#orphans + 1] = id
      end
    end
    -- Orphans took places: take as many ids again while ready may hold more (the pop was
    -- full), up to sweep_limit orphans per call.
    local short = count - (r - 4) / 3
    ids = short > 0 and #ids == asked and #orphans < sweep and
      redis.call('LPOP', ready, string.format('%d', short))
    asked = short
  end
  call_chunked('ZADD', leased, lease) -- PIN is set again each time: one ZADD, no extra call
  if #orphans > 0 then -- ids whose record is gone: nothing to deliver, drop their history
    call_chunked('HDEL', meta, orphans)
    call_chunked('HDEL', errors, orphans)
    redis.call('HINCRBY', stats, 'orphaned', string.format('%d', #orphans))
  end
  -- More ready work than this worker took: pass the wake-up on to another blocked worker.
  ready_left = redis.call('LLEN', ready) > 0
  if ready_left then
    wake(wake_key)
  end
end

-- For a worker given nothing to do: how long until something becomes ready without an
-- enqueue, from now (so the worker needs no clock of its own to sleep). (A reply with jobs
-- skips it: two ZRANGE WITHSCORES, each score printf'd and parsed back, were a fifth of a
-- one-job reserve.) 0 when ids are ready now, though this call took only orphans: the caller
-- calls again at once instead of taking the queue for empty.
if #reply == 4 and ready_left then
  reply[4] = 0
elseif #reply == 4 then
  local first_due = redis.call('ZRANGE', delayed, '0', '0', 'WITHSCORES')[2]
  local first_deadline = redis.call('ZRANGE', leased, '0', '0', 'WITHSCORES')[2] -- inf: only PIN
  local next_event = math.min(tonumber(first_due) or math.huge, tonumber(first_deadline) or math.huge)
  if next_event ~= math.huge then
    reply[4] = math.max(0, next_event - now)
  end
end
return reply
