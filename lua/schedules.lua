--[[
schedules: read a queue's schedules (read-only): the named ones, or the first ones due, with
their definitions and the server's time, so a scheduler needs no clock of its own.

KEYS
  1  schedules     HASH  schedule name -> its definition (JSON)
  2  schedule_due  ZSET  schedule name -> its next due time (ms, the server's clock)
ARGV
  1  limit  integer  most schedules read when no name is given, 1..1000
  2..       name     string   read these schedules instead (in this order)
REPLY
  {0, now_ms, name1, due1, definition1, ...}  due is -1 and definition false where missing;
  without names, the schedules with a due time, the soonest first
ERRORS
  {1, message}  BAD_ARGUMENT: bad limit
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

local defs, due_key = KEYS[1], KEYS[2]
local limit = arg_int(1, 'limit', 1, 1000)
if bad then
  return {BAD_ARGUMENT, bad}
end
local names = {}
if #ARGV > 1 then
  for i = 2, #ARGV do
    names[#names + 1] = ARGV[i]
  end
else
  names = redis.call('ZRANGE', due_key, '0', string.format('%d', limit - 1))
end
local reply = {OK, now_ms()}
for _, name in ipairs(names) do
  local due = redis.call('ZSCORE', due_key, name)
  reply[#reply + 1] = name
  reply[#reply + 1] = due and tonumber(due) or -1
  reply[#reply + 1] = redis.call('HGET', defs, name)
end
return reply
