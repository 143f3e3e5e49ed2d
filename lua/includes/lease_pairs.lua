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
