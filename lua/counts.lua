--[[
counts: how many jobs are in each state, read in one consistent view (read-only).

KEYS
  1  ready    LIST  ids waiting, FIFO (the plain jobs)
  2  delayed  ZSET  id -> due time (ms)
  3  leased   ZSET  "token:id" -> lease deadline (ms), and a +inf member (PIN, reserve.lua)
  4  dead     ZSET  id -> time it died (ms)
  5  ranked   ZSET  the ready ranked jobs (ranked.lua): counted as ready
ARGV
  (none)
REPLY
  {0, ready, delayed, leased, dead}
]]
-- @include codes
-- generated from lua/includes/codes.lua by `make lua`: edit that file, not this block
-- Reply codes (mirrored by pyqcore.codes.Code; a test keeps the two equal).
local OK, BAD_ARGUMENT, LEASE_LOST, LOCKED, QUEUE_FULL = 0, 1, 2, 3, 4
-- @end codes

return {OK, redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[5]), redis.call('ZCARD', KEYS[2]),
        redis.call('ZCOUNT', KEYS[3], '-inf', '(inf'), redis.call('ZCARD', KEYS[4])}
