-- A lease is one member of the leased ZSET, "token:id" scored by its deadline. Holding the
-- token is holding the member: a batch of leases is granted with one ZADD, checked and dropped
-- with one ZADD XX CH and one ZREM (take_leases.lua), and no per-job state is written to lease a
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
