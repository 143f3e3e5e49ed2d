-- ARGV[i] as a lease token: TOKEN_LENGTH hex digits (64 random bits from the caller; a counter
-- in Redis would repeat itself after a failover to a replica that had not seen its last values).
local function arg_token(i, name)
  local s = ARGV[i]
  if not (s and #s == TOKEN_LENGTH and string.match(s, '^%x+$')) then
    bad = bad or string.format('ARGV[%d] %s must be %d hex digits, got %q', i, name, TOKEN_LENGTH, tostring(s))
    return string.rep('0', TOKEN_LENGTH)
  end
  return s
end
