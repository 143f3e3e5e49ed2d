#!lua flags=allow-oom
--[[
unlock: release an item lock, only by its holder (the token it was taken with).

KEYS
  1  lock  STRING  holds the holder's token
ARGV
  1  token  string  the token the lock was taken with
REPLY
  {0, 1}  released
  {0, 0}  not held under this token (expired, or someone else's): untouched
ERRORS
  {1, message}  BAD_ARGUMENT: no token, or an empty one; nothing written
]]
-- @include codes
-- generated from lua/includes/codes.lua by `make lua`: edit that file, not this block
-- Reply codes (mirrored by pyqcore.codes.Code; a test keeps the two equal).
local OK, BAD_ARGUMENT, LEASE_LOST, LOCKED, QUEUE_FULL = 0, 1, 2, 3, 4
-- @end codes

local token = ARGV[1] or ''
if token == '' then
  return {BAD_ARGUMENT, 'ARGV[1] token must not be empty'}
end
if redis.call('GET', KEYS[1]) == token then
  redis.call('DEL', KEYS[1])
  return {OK, 1}
end
return {OK, 0}
