-- A lease is one member of the leased ZSET, "token:id" scored by its deadline. Holding the
-- token is holding the member: a batch of leases is granted with one ZADD, checked and dropped
-- with one ZADD XX CH and one ZREM (take_leases), and no per-job state is written to lease a
-- job. Tokens are exactly 16 hex digits, so "token:id" splits one way only, whatever the id
-- contains.
local TOKEN_LENGTH = 16

-- The leased ZSET also holds PIN, scored +inf, which is never a lease. PIN is longer than
-- zset-max-listpack-value (64 bytes by default), so the set is a skiplist + hash table from its
-- first ZADD on and never becomes a listpack: in a listpack, each member a batch adds or checks
-- costs a scan of the whole set (measured with callgrind: half the Redis CPU of a job's life
-- cycle, with batches of 100). Counting leases is ZCOUNT leased -inf (+inf. Its 17th character
-- is not ':', so no "token:id" spells it.
local PIN = '~pin: not a lease; a member this long keeps the leased set a skiplist (see lease.lua)~'

local function lease_member(token, id)
  return token .. ':' .. id
end

local function lease_id(member)
  return string.sub(member, TOKEN_LENGTH + 2)
end

-- ARGV from position first on as (id, token) pairs: ids, their lease members, and the count
-- of pairs. A token of the wrong shape, or a pair given twice, gets a member that no lease
-- has (""): refused, never confused with another job's lease nor settled twice.
local function lease_pairs(first)
  local ids, members, seen, n = {}, {}, {}, 0
  for i = first, #ARGV, 2 do
    n = n + 1
    local id, token = ARGV[i], ARGV[i + 1]
    local member = #token == TOKEN_LENGTH and lease_member(token, id) or ''
    if seen[member] then
      member = ''
    end
    seen[member] = true
    ids[n] = id
    members[n] = member
  end
  return ids, members, n
end

-- Removes the held leases among members (from lease_pairs) and says whose they were: the ids
-- taken, in the order given, and the ids refused. ZADD XX CH first moves each held member to
-- score -1, a deadline no lease has, and counts them: when all are held (the usual case) the
-- count is the whole answer; otherwise the members now at -1 are exactly the held ones.
-- ZMSCORE would answer per member, but it formats each score with printf: callgrind counts 12%
-- more instructions per ack with it.
local function take_leases(leased, ids, members, n)
  local marks, held = {}, 0
  for i = 1, n do
    marks[2 * i - 1] = '-1'
    marks[2 * i] = members[i]
  end
  for i = 1, #marks, 1000 do -- slices of 500 pairs, under Lua's unpack limit
    held = held + redis.call('ZADD', leased, 'XX', 'CH', unpack(marks, i, math.min(i + 999, #marks)))
  end
  if held == n then
    call_chunked('ZREM', leased, members)
    return ids, {}
  end
  local mine, taken, gone, refused = {}, {}, {}, {}
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', leased, -1, -1)) do
    mine[member] = true
  end
  for i = 1, n do
    if mine[members[i]] then
      taken[#taken + 1] = ids[i]
      gone[#gone + 1] = members[i]
    else
      refused[#refused + 1] = ids[i]
    end
  end
  call_chunked('ZREM', leased, gone)
  return taken, refused
end
