-- What an add does with the jobs it stored (enqueue.lua; schedule_claim.lua with a schedule's
-- runs): their own delivery limit, if they have one, and their place at the back of the ready
-- list.

-- Gives the jobs `ids` their own delivery limit (max_retries + 1: limit_arg, as ARGV text) in the
-- meta hash as meta.lua's meta_put writes it, "0:0:limit": fail and reserve's reclaim read it
-- instead of the queue's.
local function put_limits(meta_key, ids, limit_arg)
  local limits, limit = {}, '0:0:' .. limit_arg
  for i, id in ipairs(ids) do
    limits[2 * i - 1] = id
    limits[2 * i] = limit
  end
  call_chunked('HSET', meta_key, limits)
end

-- Appends ids to the ready list, waking a blocked worker if the list was empty: only an empty
-- list can have workers blocked on it (a longer one was non-empty at their last reserve, which
-- passes the wake-up on while work remains).
local function push_ready(ready_key, wake_key, ids)
  if call_chunked('RPUSH', ready_key, ids) == #ids then
    wake(wake_key)
  end
end
