
-- Usage: KEYS = (counter, leases) per counter; ARGV = now_ms, then per counter: kind, slot, sn.
-- Reply: per counter, its usage (7 values).
local now = ARGV[1]
local out = {}
for i = 1, #KEYS / 2 do
  local a = 2 + (i - 1) * 3
  local u = load(KEYS[2 * i - 1], ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2])
  purge(u, KEYS[2 * i], now)
  save(u)
  usage_reply(out, u)
end
return out
