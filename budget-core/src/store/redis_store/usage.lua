
-- Usage: KEYS = (counter, leases) per counter; ARGV = now_ms, then per counter: kind, slot.
-- Reply: per counter, its usage (7 values).
local now = ARGV[1]
local out = {}
for i = 1, #KEYS / 2 do
  local u = load(KEYS[2 * i - 1], ARGV[2 * i], tonumber(ARGV[2 * i + 1]))
  purge(u, KEYS[2 * i], now)
  save(u)
  usage_reply(out, u)
end
return out
