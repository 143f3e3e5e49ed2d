--[[
counts: how many jobs are in each state, read in one consistent view (read-only).

KEYS
  1  ready    LIST  ids waiting, FIFO
  2  delayed  ZSET  id -> due time (ms)
  3  leased   ZSET  "token:id" -> lease deadline (ms), and a +inf member (see lease.lua)
  4  dead     ZSET  id -> time it died (ms)
ARGV
  (none)
REPLY
  {0, ready, delayed, leased, dead}
]]

return {0, redis.call('LLEN', KEYS[1]), redis.call('ZCARD', KEYS[2]),
        redis.call('ZCOUNT', KEYS[3], '-inf', '(inf'), redis.call('ZCARD', KEYS[4])}
