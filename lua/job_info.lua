--[[
job_info: where one job is and what is known about it, in one consistent read (read-only).
A job with a record is dead, delayed, leased (active) or else ready (waiting): the leased set is
searched by the id's members (it holds only the jobs in flight); the ready list is not searched.
A job with none may be a kept finished one (keep_completed): completed (complete.lua) or
cancelled (cancel.lua, clear.lua: its kept value starts "c:", keep_cancelled.lua); a live job
(one re-added, or running with a cancel requested) wins over its kept entry.

KEYS
  1  delayed  ZSET  id -> due time (ms)
  2  leased   ZSET  "token:id" -> lease deadline (ms)
  3  dead     ZSET  id -> time it died (ms)
  4  jobs     HASH  id -> serialized job record
  5  meta     HASH  id -> "attempts:redrives" (jobs with a history only)
  6  errors     HASH  id -> last error (JSON)
  7  completed  ZSET  id -> time it completed (ms): kept completed jobs
  8  kept       HASH  id -> "attempts:redrives:" and the job's record ("c:" first: cancelled)
  9  results    HASH  id -> the handler's return value, serialized
ARGV
  1  id  string  job id
REPLY
  {0}                                               no such job
  {0, state, record, meta, error, at_ms}            state is "waiting", "delayed", "active" or
                                                    "dead"; meta and error may be nil; at_ms is
                                                    the due time (delayed), the lease deadline
                                                    (active), the time it died (dead), else -1
  {0, "completed", kept, nil, nil, at_ms, result}   a kept completed job: kept as stored, at_ms
                                                    when it completed, result may be nil
  {0, "cancelled", kept, nil, nil, at_ms}           a kept cancelled job: kept without its "c:"
                                                    mark, at_ms when it was cancelled
ERRORS
  {1, message}  BAD_ARGUMENT: empty id
]]
-- @include codes
-- generated from lua/includes/codes.lua by `make lua`: edit that file, not this block
-- Reply codes (mirrored by pyqcore.codes.Code; a test keeps the two equal).
local OK, BAD_ARGUMENT, LEASE_LOST, LOCKED, QUEUE_FULL = 0, 1, 2, 3, 4
-- @end codes
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

local delayed, leased, dead, jobs, meta, errors = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local completed, kept, results = KEYS[7], KEYS[8], KEYS[9]
local id = ARGV[1] or ''
if id == '' then
  return {BAD_ARGUMENT, 'ARGV[1] id must not be empty'}
end

local record = redis.call('HGET', jobs, id)
if not record then
  local done_at = redis.call('ZSCORE', completed, id)
  if not done_at then
    return {OK}
  end
  local value = redis.call('HGET', kept, id)
  if value and string.sub(value, 1, 2) == 'c:' then -- cancelled (keep_cancelled.lua): no result
    return {OK, 'cancelled', string.sub(value, 3), false, false, done_at}
  end
  return {OK, 'completed', value, false, false, done_at, redis.call('HGET', results, id)}
end
local state, at = 'waiting', -1
local died = redis.call('ZSCORE', dead, id)
local due = not died and redis.call('ZSCORE', delayed, id)
if died then
  state, at = 'dead', died
elseif due then
  state, at = 'delayed', due
else
  -- A lease is "token:id" with a token of TOKEN_LENGTH characters: the member spelled with
  -- its own token and this id is this job's lease.
  local total = redis.call('ZCARD', leased)
  for first = 0, total - 1, 1000 do
    local page = redis.call('ZRANGE', leased, string.format('%d', first),
                            string.format('%d', first + 999), 'WITHSCORES')
    for i = 1, #page, 2 do
      if page[i] == lease_member(string.sub(page[i], 1, TOKEN_LENGTH), id) then
        state, at = 'active', page[i + 1]
        break
      end
    end
    if state == 'active' then
      break
    end
  end
end
return {OK, state, record, redis.call('HGET', meta, id), redis.call('HGET', errors, id),
        tostring(at)}
