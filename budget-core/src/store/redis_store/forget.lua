
-- Forget: KEYS = (counter, leases) per counter of a finished task; ARGV = now_ms. Counters
-- with nothing in flight are deleted; the others expire with their TTL.
local deleted = 0
for i = 1, #KEYS / 2 do
  local H, L = KEYS[2 * i - 1], KEYS[2 * i]
  local u = load(H, nil, 0)
  purge(u, L, ARGV[1])
  if u.n == 0 then
    deleted = deleted + redis.call('DEL', H, L)
    u.deleted = true
  else
    save(u)
  end
end
return deleted
