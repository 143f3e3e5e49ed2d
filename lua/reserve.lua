--[[
reserve: lease up to N ready jobs to one worker, after housekeeping that makes jobs ready:
promote due delayed jobs, and reclaim expired leases (each expired lease was a delivery, so it
counted as an attempt: a job whose last allowed delivery expired goes to the dead-letter queue).

KEYS
  1  ready    LIST  ids waiting, FIFO
  2  delayed  ZSET  id -> due time (ms)
  3  leased   ZSET  id -> lease deadline (ms)
  4  dead     ZSET  id -> time it died (ms)
  5  jobs     HASH  id -> serialized job record
  6  meta     HASH  id -> "attempts:token:redrives"
  7  errors   HASH  id -> last error (JSON: type, message, traceback)
  8  stats    HASH  counters
  9  wake     LIST  marker that blocked workers wait on
ARGV
  1  now_ms        integer, ms  current time
  2  count         integer      most jobs to lease (0 = housekeeping only)
  3  visibility_ms integer, ms  lease length, > 0
  4  max_attempts  integer      deliveries allowed per job (max_retries + 1), >= 1
  5  sweep_limit   integer      most delayed promotions and most expired leases handled, >= 1
  6  token         integer      the lease token of this call's jobs: random, >= 1, from the
                                caller (a counter in Redis would repeat itself after a
                                failover to a replica that had not seen its last values)
REPLY
  {0, token, deadline_ms, next_event_ms, id1, record1, attempt1, ...}
  token is the lease token of every job in this reply; attempt is the delivery number (1 =
  first); next_event_ms is the earliest due time of a delayed job or lease deadline, -1 if
  none: a worker with nothing to do can sleep until then. Ids whose record is missing are
  dropped (counted in stats as "orphaned").
ERRORS
  {1, message}  BAD_ARGUMENT; nothing written
]]
-- @include common
-- Reply codes (mirrored by pyqcore.codes.Code; a test keeps the two equal).
local OK, BAD_ARGUMENT, LEASE_LOST, LOCKED = 0, 1, 2, 3
local MAX_INT = 9007199254740991 -- 2^53 - 1: the largest integer a Lua double holds exactly

-- The first argument error found; a script checks it before its first write.
local bad

-- ARGV[i] as an integer within [min, MAX_INT]; records a readable error otherwise.
local function arg_int(i, name, min)
  local s = ARGV[i]
  local v = s and string.match(s, '^%-?%d+$') and tonumber(s)
  if not v or v < min or v > MAX_INT then
    bad = bad or string.format('ARGV[%d] %s must be an integer >= %d, got %q', i, name, min, tostring(s))
    return min
  end
  return v
end

-- ARGV[i] as a lease token: a positive integer of any length, kept as a string (tokens are
-- 62-bit random numbers, beyond what a Lua double holds exactly, and are only compared).
local function arg_token(i, name)
  local s = ARGV[i]
  if not (s and string.match(s, '^[1-9]%d*$')) then
    bad = bad or string.format('ARGV[%d] %s must be a positive integer, got %q', i, name, tostring(s))
    return '0'
  end
  return s
end

-- Calls a variadic command over items in slices, so any count stays under Lua's unpack limit.
local function call_chunked(cmd, key, items) -- no call at all for no items
  for i = 1, #items, 1000 do
    redis.call(cmd, key, unpack(items, i, math.min(i + 999, #items)))
  end
end

-- Leaves one marker on the wake list, so exactly one blocked worker wakes (and rechecks).
local function wake(wake_key)
  if redis.call('LLEN', wake_key) == 0 then
    redis.call('RPUSH', wake_key, '1')
  end
end
-- @end common
-- @include meta
-- Per-job mutable state in the meta hash: "attempts:token:redrives".
-- attempts counts deliveries since the job was added or last redriven; token is the current
-- lease ("0" when not leased), kept as a string so it compares exactly with ARGV; redrives
-- counts trips from the dead-letter queue back to ready.
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

local function meta_get(value)
  if not value then -- never delivered: the common case on the hot path
    return 0, '0', 0
  end
  local a, t, r = string.match(value, '^(%d+):(%d+):(%d+)$')
  if not a then
    return 0, '0', 0
  end
  return str_to_int[a], t, str_to_int[r]
end

local function meta_put(attempts, token, redrives)
  return int_to_str[attempts] .. ':' .. token .. ':' .. int_to_str[redrives]
end
-- @end meta
-- @include bury
-- Moves one job to the queue's part of the dead-letter queue, with the error that put it there.
-- The record stays in the jobs hash, so the job can be inspected and redriven under its own id.
local function bury(dead_key, errors_key, stats_key, id, now, error_json)
  redis.call('ZADD', dead_key, now, id)
  redis.call('HSET', errors_key, id, error_json)
  redis.call('HINCRBY', stats_key, 'dead', 1)
end
-- @end bury

local ready, delayed, leased, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local jobs, meta, errors, stats, wake_key = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local now = arg_int(1, 'now_ms', 0)
local count = arg_int(2, 'count', 0)
local visibility = arg_int(3, 'visibility_ms', 1)
local max_attempts = arg_int(4, 'max_attempts', 1)
local sweep = arg_int(5, 'sweep_limit', 1)
local token = arg_token(6, 'token')
if bad then
  return {BAD_ARGUMENT, bad}
end

-- Promote delayed jobs that are due, oldest due first, to the back of ready.
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, sweep)
if #due > 0 then
  call_chunked('RPUSH', ready, due)
  call_chunked('ZREM', delayed, due)
end

-- Reclaim expired leases: back to the front of ready, or to the dead-letter queue.
local expired = redis.call('ZRANGEBYSCORE', leased, '-inf', now, 'LIMIT', 0, sweep)
if #expired > 0 then
  local states = redis.call('HMGET', meta, unpack(expired))
  local back = {}
  for i, id in ipairs(expired) do
    local attempts, _, redrives = meta_get(states[i])
    redis.call('HSET', meta, id, meta_put(attempts, '0', redrives))
    if attempts >= max_attempts then
      bury(dead, errors, stats, id, now, cjson.encode({
        type = 'LeaseExpired',
        message = 'lease expired during delivery ' .. attempts .. ' of ' .. max_attempts,
        traceback = '',
      }))
    else
      back[#back + 1] = id
    end
  end
  call_chunked('ZREM', leased, expired)
  if #back > 0 then
    -- LPUSH puts each id in front of the previous one: push newest first to keep their order.
    local reversed = {}
    for i = #back, 1, -1 do
      reversed[#reversed + 1] = back[i]
    end
    call_chunked('LPUSH', ready, reversed)
  end
  redis.call('HINCRBY', stats, 'reclaimed', #expired)
end

local reply = {OK, 0, now + visibility, -1}
local ids = count > 0 and redis.call('LPOP', ready, count)
if ids then
  local deadline = string.format('%d', now + visibility) -- formatted once, not per job
  local records = redis.call('HMGET', jobs, unpack(ids))
  local states = redis.call('HMGET', meta, unpack(ids))
  -- The hot loop: explicit indexes, since #t costs a search on every append.
  local lease, state, n, r, orphans = {}, {}, 0, 4, 0
  for i, id in ipairs(ids) do
    if records[i] then
      local attempts, _, redrives = meta_get(states[i])
      attempts = attempts + 1
      state[n + 1] = id
      state[n + 2] = meta_put(attempts, token, redrives)
      lease[n + 1] = deadline
      lease[n + 2] = id
      n = n + 2
      reply[r + 1] = id
      reply[r + 2] = records[i]
      reply[r + 3] = attempts
      r = r + 3
    else
      redis.call('HDEL', meta, id)
      orphans = orphans + 1
    end
  end
  if n > 0 then
    call_chunked('HSET', meta, state)
    call_chunked('ZADD', leased, lease)
  end
  if orphans > 0 then
    redis.call('HINCRBY', stats, 'orphaned', orphans)
  end
  reply[2] = token
  -- More ready work than this worker took: pass the wake-up on to another blocked worker.
  if redis.call('LLEN', ready) > 0 then
    wake(wake_key)
  end
end

-- The next moment something becomes ready without an enqueue.
local first_due = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')[2]
local first_deadline = redis.call('ZRANGE', leased, 0, 0, 'WITHSCORES')[2]
local next_event = math.min(tonumber(first_due) or math.huge, tonumber(first_deadline) or math.huge)
if next_event ~= math.huge then
  reply[4] = next_event
end
return reply
