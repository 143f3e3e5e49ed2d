-- Moves one job to the queue's part of the dead-letter queue, with the error that put it there.
-- The record stays in the jobs hash, so the job can be inspected and redriven under its own id.
-- now_arg is the time as a string: a Lua number argument would be printf'd by Redis.
local function bury(dead_key, errors_key, stats_key, id, now_arg, error_json)
  redis.call('ZADD', dead_key, now_arg, id)
  redis.call('HSET', errors_key, id, error_json)
  redis.call('HINCRBY', stats_key, 'dead', '1')
end
