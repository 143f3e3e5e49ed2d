-- Books the end of leases (acked, failed, released, reclaimed) of jobs with these attrs values:
-- each group's active count drops, and a group held at its group_concurrency is armed again
-- (the flow hash's "capped" counts the groups held so). Returns whether one was: its jobs
-- may start again, so a worker waiting for them should be woken.
local function leases_ended(fk, values)
  local order, per = group_counts(values)
  local uncapped = false
  for _, g in ipairs(order) do
    count_add(fk.flow, 'active ' .. g, -per[g])
    local capped = redis.call('HGET', fk.flow, 'capped ' .. g)
    if capped then
      redis.call('HDEL', fk.flow, 'capped ' .. g)
      arm(fk, g)
      if capped == '1' then -- jobs of g waited for it
        count_add(fk.flow, 'capped', -1)
        uncapped = true
      end
    end
  end
  return uncapped
end
