--[[
enqueue: store N jobs and make them ready (or delayed) in one atomic call.

KEYS
  1  ready    LIST  ids waiting, FIFO
  2  delayed  ZSET  id -> due time (ms)
  3  jobs     HASH  id -> serialized job record
  4  stats    HASH  counters; field "seq" numbers the queue's automatic ids
  5  wake     LIST  marker that blocked workers wait on
ARGV
  1     due_ms     integer, ms  when the jobs become ready; 0 = ready now
  2     id_prefix  string       put before numbered ids ("" = none; "3-" in partition 3)
  2k+1  id         string       job id; "" = take the queue's next number (k = 1..N)
  2k+2  record     bytes        serialized job record, stored as is
REPLY
  {0, autos, d1, d2, ...}  autos = the ids given to the "" ids, in order, joined by ","
                           (one string, cheap to send and split); d1, d2, ... = positions
                           (1-based) of jobs whose custom id already existed: idempotent
                           add, that job was skipped and the existing one left untouched
ERRORS
  {1, message}  BAD_ARGUMENT: bad due_ms, no job, or an odd id/record list; nothing written
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

-- ARGV[i] as a lease token: 16 hex digits (64 random bits from the caller; a counter in Redis
-- would repeat itself after a failover to a replica that had not seen its last values).
local function arg_token(i, name)
  local s = ARGV[i]
  if not (s and #s == 16 and string.match(s, '^%x+$')) then
    bad = bad or string.format('ARGV[%d] %s must be 16 hex digits, got %q', i, name, tostring(s))
    return '0000000000000000'
  end
  return s
end

-- Calls a variadic command over items in slices, so any count stays under Lua's unpack limit;
-- returns the last slice's reply (no call at all, and nil, for no items).
local function call_chunked(cmd, key, items)
  local last
  for i = 1, #items, 1000 do
    last = redis.call(cmd, key, unpack(items, i, math.min(i + 999, #items)))
  end
  return last
end

-- Like call_chunked for a command that answers per item (HMGET, ZMSCORE): the replies joined.
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

-- Leaves one marker on the wake list, so exactly one blocked worker wakes (and rechecks).
local function wake(wake_key)
  if redis.call('LLEN', wake_key) == 0 then
    redis.call('RPUSH', wake_key, '1')
  end
end
-- @end common

local ready, delayed, jobs, stats, wake_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local due = arg_int(1, 'due_ms', 0)
local id_prefix = ARGV[2] or ''
if #ARGV < 4 or #ARGV % 2 ~= 0 then
  bad = bad or 'ARGV[3..] must be (id, record) pairs, at least one'
end
if bad then
  return {BAD_ARGUMENT, bad}
end

-- Every job's id: custom ones as given, "" ones numbered from a block of the queue's counter
-- (one HINCRBY for the call).
local n = (#ARGV - 2) / 2
local autos = 0
for k = 1, n do
  if ARGV[2 * k + 1] == '' then
    autos = autos + 1
  end
end
local seq = autos > 0 and redis.call('HINCRBY', stats, 'seq', autos) - autos or 0
local ids = {}
for k = 1, n do
  local id = ARGV[2 * k + 1]
  if id == '' then
    seq = seq + 1
    id = id_prefix .. string.format('%d', seq)
  end
  ids[k] = id
end

-- Which of those ids exist already: one HMGET. A custom id that exists (or repeats within the
-- call) is an idempotent add, skipped; a number that a caller already used as a custom id is
-- replaced by a further one.
local existing = gather_chunked('HMGET', jobs, ids)
local taken, fields, fresh, numbered, reply = {}, {}, {}, {}, {OK, ''}
local f, a = 0, 0 -- explicit indexes in the per-job loop: #t costs a search on every append
for k = 1, n do
  local id = ids[k]
  if ARGV[2 * k + 1] == '' then
    if taken[id] or existing[k] then
      repeat
        id = id_prefix .. string.format('%d', redis.call('HINCRBY', stats, 'seq', 1))
      until not taken[id] and redis.call('HEXISTS', jobs, id) == 0
    end
    a = a + 1
    numbered[a] = id
  elseif taken[id] or existing[k] then
    reply[#reply + 1] = k
    id = nil
  end
  if id then
    taken[id] = true
    f = f + 1
    fresh[f] = id
    fields[2 * f - 1] = id
    fields[2 * f] = ARGV[2 * k + 2]
  end
end
reply[2] = table.concat(numbered, ',')

if #fresh > 0 then
  call_chunked('HSET', jobs, fields)
  local should_wake
  if due == 0 then
    -- Only a ready list that was empty can have workers blocked on it; a longer one was
    -- non-empty at their last reserve, which passes the wake-up on while work remains.
    should_wake = call_chunked('RPUSH', ready, fresh) == #fresh
  else
    local scored = {}
    for i, id in ipairs(fresh) do
      scored[2 * i - 1] = due
      scored[2 * i] = id
    end
    call_chunked('ZADD', delayed, scored)
    should_wake = true -- a sleeping worker must learn of a due time sooner than it planned for
  end
  redis.call('HINCRBY', stats, 'added', #fresh)
  if should_wake then
    wake(wake_key)
  end
end
return reply
