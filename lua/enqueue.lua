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

local ready, delayed, jobs, stats, wake_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local due = arg_int(1, 'due_ms', 0)
local id_prefix = ARGV[2] or ''
if #ARGV < 4 or #ARGV % 2 ~= 0 then
  bad = bad or 'ARGV[3..] must be (id, record) pairs, at least one'
end
if bad then
  return {BAD_ARGUMENT, bad}
end

-- Automatic ids: reserve a block of numbers with one HINCRBY; a number that a caller already
-- used as a custom id is skipped by taking one more.
local autos = 0
for i = 3, #ARGV, 2 do
  if ARGV[i] == '' then
    autos = autos + 1
  end
end
local next_seq = 0
if autos > 0 then
  next_seq = redis.call('HINCRBY', stats, 'seq', autos) - autos
end

local reply, fresh, numbered = {OK, ''}, {}, {}
for i = 3, #ARGV, 2 do
  local id, record = ARGV[i], ARGV[i + 1]
  if id == '' then
    next_seq = next_seq + 1
    id = id_prefix .. string.format('%d', next_seq)
    while redis.call('HSETNX', jobs, id, record) == 0 do
      id = id_prefix .. string.format('%d', redis.call('HINCRBY', stats, 'seq', 1))
    end
    numbered[#numbered + 1] = id
    fresh[#fresh + 1] = id
  elseif redis.call('HSETNX', jobs, id, record) == 1 then
    fresh[#fresh + 1] = id
  else
    reply[#reply + 1] = (i - 1) / 2
  end
end
reply[2] = table.concat(numbered, ',')

if #fresh > 0 then
  if due == 0 then
    call_chunked('RPUSH', ready, fresh)
  else
    local scored = {}
    for _, id in ipairs(fresh) do
      scored[#scored + 1] = due
      scored[#scored + 1] = id
    end
    call_chunked('ZADD', delayed, scored)
  end
  redis.call('HINCRBY', stats, 'added', #fresh)
  wake(wake_key)
end
return reply
