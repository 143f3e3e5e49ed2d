#!lua flags=allow-oom
--[[
fail: one decision for a delivery that failed: retry after a backoff while attempts remain,
otherwise move the job to the dead-letter queue with its error.

KEYS
  1  ready    LIST  ids waiting, FIFO
  2  delayed  ZSET  id -> due time (ms)
  3  leased   ZSET  "token:id" -> lease deadline (ms)
  4  dead     ZSET  id -> time it died (ms)
  5  meta     HASH  id -> "attempts:redrives[:limit]" (jobs with a history or their own limit)
  6  errors   HASH  id -> last error (JSON)
  7  stats    HASH  counters
  8  wake     LIST  marker that blocked workers wait on
  9  jobs     HASH  id -> serialized job record
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
REPLY
  {0, "retry", due_ms}  the job waits in delayed until due_ms (or is back in ready, due now)
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

local ready, delayed, leased, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local meta, errors, stats, wake_key = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
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
local history = redis.call('HGET', meta, id)
local now = now_ms()
if meta_cancelled(history) then -- cancelled while leased: this delivery was its last
  redis.call('HDEL', KEYS[9], id)
  redis.call('HDEL', meta, id)
  redis.call('HDEL', errors, id)
  redis.call('HINCRBY', stats, 'cancelled', '1')
  return {OK, 'cancelled', now}
end
local attempts, redrives, limit = meta_get(history)
attempts = attempts + 1 -- this delivery
redis.call('HSET', meta, id, meta_put(attempts, redrives, limit))

if retryable == 1 and attempts < (limit or max_attempts) then -- the job's own limit first
  redis.call('HSET', errors, id, error_json)
  redis.call('HINCRBY', stats, 'retried', '1')
  wake(wake_key)
  if backoff == 0 then
    redis.call('RPUSH', ready, id)
    return {OK, 'retry', now}
  end
  redis.call('ZADD', delayed, string.format('%d', now + backoff), id)
  return {OK, 'retry', now + backoff}
end
bury(dead, errors, stats, id, string.format('%d', now), error_json)
return {OK, 'dead', now}
