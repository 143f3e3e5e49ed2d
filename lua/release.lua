#!lua flags=allow-oom
--[[
release: give back leased jobs that a worker took but never started (it is shutting down).
They return to the front of ready and the delivery is not counted as an attempt; a job
cancelled while leased (cancel.lua) is deleted instead.

KEYS
  1  ready   LIST  ids waiting, FIFO
  2  leased  ZSET  "token:id" -> lease deadline (ms)
  3  wake    LIST  marker that blocked workers wait on
  4  jobs    HASH  id -> serialized job record
  5  meta    HASH  id -> "attempts:redrives[:limit]", ":c" after them for a cancelled job
  6  errors  HASH  id -> last error (JSON)
  7  stats   HASH  counters ("cancelled")
ARGV
  2k-1  id     string   job id (k = 1..N)
  2k    token  16 hex   its lease token
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

local ready, leased, wake_key = KEYS[1], KEYS[2], KEYS[3]
local jobs, meta, errors, stats = KEYS[4], KEYS[5], KEYS[6], KEYS[7]
if #ARGV < 2 or #ARGV % 2 ~= 0 then
  return {BAD_ARGUMENT, 'ARGV must be (id, token) pairs, at least one'}
end

-- The delivery never started, so it leaves no history: the lease just goes.
local ids, members, n = lease_pairs(1)
local held, refused = take_leases(leased, ids, members, n)
local back = held
-- Meta is empty unless some job has a history (HLEN is O(1)): only then look for cancel marks.
if #held > 0 and redis.call('HLEN', meta) > 0 then
  local states, cancelled = gather_chunked('HMGET', meta, held), {}
  back = {}
  for i, id in ipairs(held) do
    if meta_cancelled(states[i]) then
      cancelled[#cancelled + 1] = id
    else
      back[#back + 1] = id
    end
  end
  if #cancelled > 0 then
    call_chunked('HDEL', jobs, cancelled)
    call_chunked('HDEL', meta, cancelled)
    call_chunked('HDEL', errors, cancelled)
    redis.call('HINCRBY', stats, 'cancelled', string.format('%d', #cancelled))
  end
end
if #back > 0 then
  -- LPUSH puts each id in front of the previous one: push newest first to keep their order.
  local reversed = {}
  for i = #back, 1, -1 do
    reversed[#reversed + 1] = back[i]
  end
  call_chunked('LPUSH', ready, reversed)
  wake(wake_key)
end
local reply = {OK, #held}
for i, id in ipairs(refused) do
  reply[i + 2] = id
end
return reply
