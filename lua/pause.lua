--[[
pause: pause or resume the queue, or one group of it. A paused queue or group leases nothing
new; jobs already leased run on and settle as usual, and adds go on. The state lives here, so
it holds across worker restarts until a resume.

KEYS
  1  paused  STRING  "1" while the queue is paused
  2  flow    HASH    per-group counts and flags ("paused G": the group is paused; arm.lua)
  3  groups  ZSET    group -> turn: the round robin of groups that may lease a job now
  4  gwait   ZSET    group -> ms: groups waiting out their group_rate_limit
  5  wake    LIST    marker that blocked workers wait on
ARGV
  1  pause   0 or 1   1 = pause, 0 = resume
  2  group   string   "" = the whole queue, else that group
REPLY
  {0, changed}  changed = 1 if the state changed, 0 if it already was so
ERRORS
  {1, message}  BAD_ARGUMENT; nothing written
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
-- @include arm
-- generated from lua/includes/arm.lua by `make lua`: edit that file, not this block
-- Groups share the leasing round robin. The flow hash keeps, per group G, "ready G" (G's jobs in
-- ranked), "active G" (G's leases held), "paused G" and "capped G" (set while G is held out of
-- the round robin at its group_concurrency: "1" while jobs of G wait for it, counted in the
-- hash's "capped"; "0" when G reached it with nothing left ready, so that an add keeps G out
-- too, and becomes "1" then); a field is absent when 0 or unset. The groups ZSET
-- is the round robin: the groups that may lease a job now, scored by turn (the lowest goes next,
-- a group served goes to the back); its member "" stands for the ready jobs with no group. A
-- group waiting out its group_rate_limit is in gwait instead, scored by when it may start again.
-- Every event that can make a group eligible (an add, a lease ending, a resume) arms it, and
-- reserve checks each limit again before leasing: a group with nothing ready costs nothing, and
-- one at a limit is out of the round robin until it may start again.
-- fk holds the keys: flow, groups, gwait (and ready, ranked for place.lua).

local function next_turn(groups_key) -- a turn behind every group in the round robin
  local last = redis.call('ZRANGE', groups_key, '-1', '-1', 'WITHSCORES')[2]
  return (tonumber(last) or 0) + 1
end

-- Puts group g at the back of the round robin if it may lease a job now (and is not in it).
local function arm(fk, g)
  local state = redis.call('HMGET', fk.flow, 'ready ' .. g, 'paused ' .. g, 'capped ' .. g)
  if state[1] and state[3] == '0' then -- held with nothing ready, and now jobs wait for it
    redis.call('HSET', fk.flow, 'capped ' .. g, '1')
    redis.call('HINCRBY', fk.flow, 'capped', '1')
  end
  if state[1] and not state[2] and not state[3] and not redis.call('ZSCORE', fk.gwait, g) then
    redis.call('ZADD', fk.groups, 'NX', string.format('%d', next_turn(fk.groups)), g)
  end
end
-- @end arm
-- @include wake
-- generated from lua/includes/wake.lua by `make lua`: edit that file, not this block
-- Leaves one marker on the wake list, so exactly one blocked worker wakes (and rechecks).
local function wake(wake_key)
  if redis.call('LLEN', wake_key) == 0 then
    redis.call('RPUSH', wake_key, '1')
  end
end
-- @end wake

local paused_key, wake_key = KEYS[1], KEYS[5]
local fk = {flow = KEYS[2], groups = KEYS[3], gwait = KEYS[4]}
local pause = arg_int(1, 'pause', 0, 1) == 1
local group = ARGV[2]
if not group or string.find(group, '[%s%c]') then
  bad = bad or string.format('ARGV[2] group must be a string without spaces, got %q', tostring(group))
end
if bad then
  return {BAD_ARGUMENT, bad}
end

local changed
if group == '' then
  if pause then
    changed = redis.call('SET', paused_key, '1', 'NX') and 1 or 0
  else
    changed = redis.call('DEL', paused_key)
  end
elseif pause then
  changed = redis.call('HSETNX', fk.flow, 'paused ' .. group, '1')
  redis.call('ZREM', fk.groups, group)
  redis.call('ZREM', fk.gwait, group)
else
  changed = redis.call('HDEL', fk.flow, 'paused ' .. group)
  arm(fk, group)
end
if changed == 1 and not pause then
  wake(wake_key) -- workers asleep while nothing could start look again
end
return {OK, changed}
