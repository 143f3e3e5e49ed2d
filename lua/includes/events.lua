-- Events (opt-in, per queue): one entry per job and transition in the partition's events STREAM,
-- fields event (added, started, completed, retried, dead, cancelled, redriven, purged), id and
-- attempt; the entry id is the server's time. A call that wants them sends the stream as its
-- LAST KEYS entry (one more key than a call without events) and the level and the stream's
-- bound as its last two ARGV entries: level 1 writes the terminal transitions only
-- (completed, dead, cancelled: what queue.result() waits for), level 2 every one. A call
-- without events sends neither, and the script does nothing more than the checks below.
local events_key, events_level, events_maxlen = false, 0, '0'

-- If the call sent the stream (keys_without + 1 KEYS), reads the level and the bound and takes
-- them off ARGV, so the rest of the script reads what a call without events sends. Returns an
-- error message for bad ones (the script refuses the call before any write), else nil.
local function events_args(keys_without)
  if #KEYS ~= keys_without + 1 then
    return nil
  end
  local n = #ARGV
  local level, maxlen = ARGV[n - 1], ARGV[n]
  if level ~= '1' and level ~= '2' then
    return string.format('ARGV[%d] events_level must be 1 or 2, got %q', n - 1, tostring(level))
  end
  if not (maxlen and string.match(maxlen, '^[1-9]%d*$') and tonumber(maxlen) <= 9007199254740991) then
    return string.format('ARGV[%d] events_maxlen must be an integer >= 1, got %q', n, tostring(maxlen))
  end
  events_key, events_level, events_maxlen = KEYS[#KEYS], tonumber(level), maxlen
  ARGV[n], ARGV[n - 1] = nil, nil
  return nil
end

-- Whether a transition of this kind is written at the call's level.
local function events_want(kind)
  return events_level == 2 or events_level == 1 and
    (kind == 'completed' or kind == 'dead' or kind == 'cancelled')
end

-- Appends one entry (attempt: a number or its text), the stream trimmed to about its bound.
local function emit(kind, id, attempt)
  if events_want(kind) then
    redis.call('XADD', events_key, 'MAXLEN', '~', events_maxlen, '*', 'event', kind, 'id', id,
      'attempt', type(attempt) == 'number' and string.format('%d', attempt) or attempt)
  end
end
