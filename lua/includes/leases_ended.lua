-- Books the end of leases (acked, failed, released, reclaimed) of jobs with these attrs values:
-- each group's active count drops, and a group held at its group_concurrency is armed again
-- (the flow hash's "capped" counts the groups held so). Returns whether one was: its jobs
-- may start again, so a worker waiting for them should be woken.
local function leases_ended(fk, values)
  local order, per = group_counts(values)
  local uncapped = false
  for _, g in ipairs(order) do
    count_add(fk.flow, 'active ' .. g, -per[g])
    if redis.call('HDEL', fk.flow, 'capped ' .. g) == 1 then
      count_add(fk.flow, 'capped', -1)
      arm(fk, g)
      uncapped = true
    end
  end
  return uncapped
end
