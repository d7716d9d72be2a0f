
-- The batch: ARGV = count, then per operation: code (r reserve, s settle, l release, u usage,
-- f forget, g grant, x release lost), its key count, its argument count, its arguments; KEYS = every operation's keys in
-- order. Operations run in order and see each other's effects; each counter is read once and
-- written once for the whole batch. Reply: one reply per operation.
local ops = {
  r = op_reserve, s = op_settle, l = op_release, u = op_usage, f = op_forget, g = op_grant,
  x = op_release_lost,
}
local out = {}
local k, a = 0, 2
for i = 1, tonumber(ARGV[1]) do
  local op, nk, na = ops[ARGV[a]], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local keys, args = {}, {}
  for j = 1, nk do keys[j] = KEYS[k + j] end
  for j = 1, na do args[j] = ARGV[a + j - 1] end
  k, a = k + nk, a + na
  out[i] = op(keys, args)
end
flush()
return out
