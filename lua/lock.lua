#!lua flags=allow-oom
--[[
lock: take an item lock, or refresh it when the caller already holds it (same token).

KEYS
  1  lock  STRING  holds the holder's token; expires by itself after ttl_ms
ARGV
  1  token   string       the caller's unique token
  2  ttl_ms  integer, ms  lifetime of the lock, >= 1
REPLY
  {0}                 the caller holds the lock until now + ttl_ms
ERRORS
  {1, message}        BAD_ARGUMENT
  {3, remaining_ms}   LOCKED: someone else holds it for about remaining_ms more
]]
-- @include codes
-- generated from lua/includes/codes.lua by `make lua`: edit that file, not this block
-- Reply codes (mirrored by pyqcore.codes.Code; a test keeps the two equal).
local OK, BAD_ARGUMENT, LEASE_LOST, LOCKED, QUEUE_FULL = 0, 1, 2, 3, 4
-- @end codes
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

local token = ARGV[1] or ''
local ttl = arg_int(2, 'ttl_ms', 1)
if token == '' then
  bad = bad or 'ARGV[1] token must not be empty'
end
if bad then
  return {BAD_ARGUMENT, bad}
end
if redis.call('SET', KEYS[1], token, 'NX', 'PX', ttl) then
  return {OK}
end
if redis.call('GET', KEYS[1]) == token then
  redis.call('PEXPIRE', KEYS[1], ttl)
  return {OK}
end
return {LOCKED, redis.call('PTTL', KEYS[1])}
