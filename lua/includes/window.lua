-- Sliding-window logs of job starts, for rate_limit and group_rate_limit: in the limiter ZSET at
-- score 0, one member per start, "<owner> <ms> <tag>": owner "" for the queue's own limit, the
-- group's name for its group's; ms the start time in 15 digits, so the bytes sort by time within
-- an owner. At most `limit` starts in any window of window_ms, both ends counted: a start at now
-- is allowed while fewer than `limit` entries are >= now - window_ms. Each look first trims the
-- owner's entries older than that, so a log never holds more than `limit` entries. A log's
-- times never go back: a caller whose now is before the newest entry (the server's clock
-- stepped back; a test's clock read before another caller's) starts nothing until then, since
-- the entries it would need were trimmed by that later look.

-- How many more starts the owner's log allows now; when none, also the time (ms) the next one is.
local function window_room(key, owner, now, window_ms, limit)
  local lo, hi = '[' .. owner .. ' ', '(' .. owner .. '!'
  local newest = redis.call('ZREVRANGEBYLEX', key, hi, lo, 'LIMIT', '0', '1')[1]
  local newest_at = newest and tonumber(string.sub(newest, #owner + 2, #owner + 16))
  if newest_at and newest_at > now then
    return 0, newest_at
  end
  redis.call('ZREMRANGEBYLEX', key, lo, string.format('(%s %015d', owner, now - window_ms))
  local held = redis.call('ZLEXCOUNT', key, lo, hi)
  if held < limit then
    return limit - held, now
  end
  -- Full: a place frees up when the entry held - limit + 1 from the oldest leaves the window.
  local entry = redis.call('ZRANGEBYLEX', key, lo, hi, 'LIMIT', string.format('%d', held - limit), '1')[1]
  return 0, tonumber(string.sub(entry, #owner + 2, #owner + 16)) + window_ms + 1
end

-- Logs k starts of the owner at now; tag makes the members unique (the reserve's lease token).
local function window_add(key, owner, now, tag, k)
  local prefix, entries = string.format('%s %015d %s:', owner, now, tag), {}
  for i = 1, k do
    entries[2 * i - 1] = '0'
    entries[2 * i] = prefix .. i
  end
  call_chunked('ZADD', key, entries)
end
