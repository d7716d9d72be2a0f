
-- Release: KEYS = (counter, leases) per reserved counter; ARGV = member, tokens, money.
local t, m = tonumber(ARGV[2]), big(ARGV[3])
for i = 1, #KEYS / 2 do
  local u = load(KEYS[2 * i - 1], nil, 0)
  take(u, KEYS[2 * i], ARGV[1], t, m, '0')
  save(u)
end
return 1
