-- Cancelled jobs kept (a queue with keep_completed or keep_completed_count): a call that wants
-- them sends the kept keys (completed, kept, results: keep_trim.lua) after its own KEYS, before
-- the events stream if any, and the bounds keep_ms and keep_count as its last two ARGV entries
-- before the events arguments. A cancelled job is kept as a completed one is (its time in
-- completed, trimmed by the same bounds), its kept value marked "c:" in front (a completed
-- job's starts with a digit) and no result. A call without the kept keys keeps nothing.
local keeping, kept_max_ms, kept_max_count = false, 0, 0
local KEPT_CANCELLED = 'c:'

-- If the call sent the kept keys (keys_without + 3 KEYS, not counting the events stream: call
-- events_args first), reads the bounds and takes them off ARGV, so the rest of the script reads
-- what a call without them sends. Returns an error message for bad ones or a wrong number of
-- KEYS (the script refuses the call before any write), else nil.
local function keep_args(keys_without)
  local sent = #KEYS - (events_key and 1 or 0)
  if sent == keys_without then
    return nil
  end
  if sent ~= keys_without + 3 then
    return string.format('KEYS must be %d, or %d with the kept keys (one more with events), got %d',
      keys_without, keys_without + 3, #KEYS)
  end
  local n = #ARGV
  local bounds = {}
  for i = n - 1, n do
    local s = ARGV[i]
    local v = s and (s == '0' or string.match(s, '^[1-9]%d*$')) and tonumber(s)
    if not v or v > 9007199254740991 then
      return string.format('ARGV[%d] %s must be an integer >= 0, got %q', i,
        i == n and 'keep_count' or 'keep_ms', tostring(s))
    end
    bounds[#bounds + 1] = v
  end
  keeping, kept_max_ms, kept_max_count = true, bounds[1], bounds[2]
  ARGV[n], ARGV[n - 1] = nil, nil
  return nil
end

-- The kept value of a cancelled job: the mark, its history ("attempts:redrives" of its meta
-- value, with running deliveries more counted: 1 for a job cancelled while it runs) and record.
local function kept_cancelled(history, running, record)
  local a, r = string.match(history or '', '^(%d+):(%d+)')
  return string.format('%s%d:%s:', KEPT_CANCELLED, (tonumber(a) or 0) + running, r or '0') ..
    (record or '')
end

-- Keeps cancelled jobs (ids, and their kept values from kept_cancelled) as finished at now (ms)
-- in the kept keys ks = {completed, kept, results}, dropping any earlier result of their ids,
-- then trims as complete.lua does: at most #ids + 100 entries.
local function keep_cancelled(ks, ids, values, now)
  local finished, entries = {}, {}
  local at = string.format('%d', now)
  for i, id in ipairs(ids) do
    finished[2 * i - 1], finished[2 * i] = at, id
    entries[2 * i - 1], entries[2 * i] = id, values[i]
  end
  call_chunked('ZADD', ks.completed, finished)
  call_chunked('HSET', ks.kept, entries)
  call_chunked('HDEL', ks.results, ids)
  keep_trim(ks.completed, ks.kept, ks.results, now, kept_max_ms, kept_max_count, #ids + 100)
end
