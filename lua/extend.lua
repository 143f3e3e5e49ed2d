#!lua flags=allow-oom
--[[
extend: heartbeat. Moves the lease deadline of N jobs still held under their tokens to
now + visibility, so a long job is not reclaimed while its worker is alive. A job marked
cancelled (cancel.lua) is not renewed: its lease ends at its current deadline.

KEYS
  1  leased  ZSET  "token:id" -> lease deadline (ms)
  2  meta    HASH  id -> "attempts:redrives", ":c" after them for a job cancelled while leased
ARGV
  1     visibility_ms  integer, ms  new lease length from now (the server's clock), > 0
  2k    id             string       job id (k = 1..N)
  2k+1  token          16 hex       its lease token
REPLY
  {0, deadline_ms, extended, cancelled, cancelled_id..., lost_id...}
      deadline_ms is the new lease deadline (the server's clock); cancelled ids are held but
      marked cancelled (not renewed); lost ids are no longer held under the token given
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

local leased, meta = KEYS[1], KEYS[2]
local visibility = arg_int(1, 'visibility_ms', 1)
if #ARGV < 3 or #ARGV % 2 ~= 1 then
  bad = bad or 'ARGV[2..] must be (id, token) pairs, at least one'
end
if bad then
  return {BAD_ARGUMENT, bad}
end

local deadline = now_ms() + visibility
local deadline_arg = string.format('%d', deadline) -- once: Redis would printf a number per job
local ids, members, n = lease_pairs(2)
local held = gather_chunked('ZMSCORE', leased, members)
-- Meta is empty unless some job has a history (HLEN is O(1)): only then look for marks.
local states = redis.call('HLEN', meta) > 0 and gather_chunked('HMGET', meta, ids) or {}
local renewed, reply, lost, e = {}, {OK, deadline, 0, 0}, {}, 0
for i = 1, n do
  if not held[i] then
    lost[#lost + 1] = ids[i]
  elseif meta_cancelled(states[i]) then
    reply[#reply + 1] = ids[i]
  else
    e = e + 2
    renewed[e - 1] = deadline_arg
    renewed[e] = members[i]
  end
end
call_chunked('ZADD', leased, renewed)
reply[3] = e / 2
reply[4] = #reply - 4
for _, id in ipairs(lost) do
  reply[#reply + 1] = id
end
return reply
