--[[
unlock: release an item lock, only by its holder (the token it was taken with).

KEYS
  1  lock  STRING  holds the holder's token
ARGV
  1  token  string  the token the lock was taken with
REPLY
  {0, 1}  released
  {0, 0}  not held under this token (expired, or someone else's): untouched
]]

if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return {0, 1}
end
return {0, 0}
