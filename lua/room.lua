--[[
room: what a queue has room for, read once before an add of several enqueue calls (read-only).
One enqueue call is all-or-nothing; a batch of several is not, so the caller refuses up front
what would not fit: past max_ready, or past the server's maxmemory.

KEYS
  1  ready    LIST  ids waiting, FIFO
  2  delayed  ZSET  id -> due time (ms)
ARGV
  (none)
REPLY
  {0, waiting, used_memory, maxmemory, run_id}  waiting = ready + delayed; used_memory and
        maxmemory in bytes as INFO says (maxmemory 0 = no limit), and the server's run_id (to
        add up partitions that share a server); -1, -1 and "" when INFO is denied (ACL)
]]
-- @include codes
-- generated from lua/includes/codes.lua by `make lua`: edit that file, not this block
-- Reply codes (mirrored by pyqcore.codes.Code; a test keeps the two equal).
local OK, BAD_ARGUMENT, LEASE_LOST, LOCKED, QUEUE_FULL = 0, 1, 2, 3, 4
-- @end codes

local waiting = redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2])
local info = redis.pcall('INFO', 'memory', 'server')
if type(info) ~= 'string' then -- an error reply: INFO is not allowed to this user
  return {OK, waiting, -1, -1, ''}
end
return {OK, waiting, tonumber(string.match(info, '\nused_memory:(%d+)')),
        tonumber(string.match(info, '\nmaxmemory:(%d+)')), string.match(info, '\nrun_id:(%x+)')}
