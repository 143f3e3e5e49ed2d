-- TESTS ONLY: pyqcore.testing.ManualClock's replacement for lua/includes/clock.lua, put in
-- place of that block in the scripts of a queue built with clock=ManualClock(...). The time
-- (ms) comes as an extra first ARGV entry, taken off here, so the rest of the script sees its
-- documented ARGV. Production scripts never carry this block (their SHAs differ): none of
-- them accepts a time from its caller.
local MANUAL_NOW = tonumber(table.remove(ARGV, 1))

local function now_ms()
  return MANUAL_NOW
end
