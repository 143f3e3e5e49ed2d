-- The queue's one clock is the Redis server's: now_ms() reads TIME, in milliseconds since the
-- epoch. No script takes the time from its caller, so a client whose clock is off changes
-- nothing. Redis >= 7 replicates a script's effects (the writes it made), never the script
-- itself, so replicas and the AOF get the values computed here: reading the clock inside a
-- script is deterministic for them. Read it only where time matters (a plain add never does).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
