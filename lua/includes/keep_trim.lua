-- Kept finished jobs (keep_completed, keep_completed_count): the completed ZSET (id -> when it
-- finished, ms), the kept HASH (id -> "attempts:redrives:" and its record, "c:" before them
-- for a cancelled job: keep_cancelled.lua) and results (id -> its handler's return value).
-- Trims them, oldest first: by age (finished more than max_age_ms before now), then by count
-- (more than max_count kept); 0 is no bound. At most budget entries go per call, so a call's work
-- stays bounded and (with a budget above what the call keeps) the kept set shrinks faster
-- than it grows.
local function keep_trim(completed, kept, results, now, max_age_ms, max_count, budget)
  local old = {}
  if max_age_ms > 0 then
    old = redis.call('ZRANGEBYSCORE', completed, '-inf', string.format('(%d', now - max_age_ms),
                     'LIMIT', '0', string.format('%d', budget))
  end
  if max_count > 0 and #old < budget then
    local excess = redis.call('ZCARD', completed) - #old - max_count
    if excess > 0 then
      local first = #old
      local more = redis.call('ZRANGE', completed, string.format('%d', first),
                              string.format('%d', first + math.min(excess, budget - #old) - 1))
      for _, id in ipairs(more) do
        old[#old + 1] = id
      end
    end
  end
  if #old > 0 then
    call_chunked('ZREM', completed, old)
    call_chunked('HDEL', kept, old)
    call_chunked('HDEL', results, old)
  end
end
