--[[
result: what queue.result() needs to know of one job, in one consistent read (read-only): whether
it is still live (waiting, delayed or active), dead (with its last error), completed and kept
(with its result), cancelled and kept (keep_cancelled.lua), or unknown here; and the id of the
last entry of the partition's events stream, from which the caller then blocks (XREAD) for the
job's terminal event, so none can fall between this read and the wait.

KEYS
  1  jobs       HASH    id -> serialized job record
  2  dead       ZSET    id -> time it died (ms)
  3  errors     HASH    id -> last error (JSON)
  4  completed  ZSET    id -> time it completed (ms): kept completed jobs
  5  results    HASH    id -> the handler's return value, serialized
  6  events     STREAM  the queue's events (events.lua)
  7  kept       HASH    id -> "attempts:redrives:" and the record; "c:" first: cancelled
ARGV
  1  id  string  job id
REPLY
  {0, last_id, state, value}  last_id = the stream's last entry id ("0-0" if it has none);
                              state is "live", "dead" (value: its last error, JSON),
                              "completed" (value: its result, absent if none was kept),
                              "cancelled" (kept: keep_cancelled.lua) or "none" (no such job
                              here: never added, or gone)
ERRORS
  {1, message}  BAD_ARGUMENT: empty id
]]
-- @include codes
-- generated from lua/includes/codes.lua by `make lua`: edit that file, not this block
-- Reply codes (mirrored by pyqcore.codes.Code; a test keeps the two equal).
local OK, BAD_ARGUMENT, LEASE_LOST, LOCKED, QUEUE_FULL = 0, 1, 2, 3, 4
-- @end codes

local jobs, dead, errors, completed, results, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local kept = KEYS[7]
local id = ARGV[1] or ''
if id == '' then
  return {BAD_ARGUMENT, 'ARGV[1] id must not be empty'}
end

local last = redis.call('XREVRANGE', events, '+', '-', 'COUNT', '1')[1]
local last_id = last and last[1] or '0-0'
if redis.call('HEXISTS', jobs, id) == 1 then -- a live job (a re-added id too) wins over a kept one
  if redis.call('ZSCORE', dead, id) then
    return {OK, last_id, 'dead', redis.call('HGET', errors, id)}
  end
  return {OK, last_id, 'live'}
end
if redis.call('ZSCORE', completed, id) then
  if redis.call('HEXISTS', results, id) == 0 and
      string.sub(redis.call('HGET', kept, id) or '', 1, 2) == 'c:' then
    return {OK, last_id, 'cancelled'}
  end
  return {OK, last_id, 'completed', redis.call('HGET', results, id)}
end
return {OK, last_id, 'none'}
