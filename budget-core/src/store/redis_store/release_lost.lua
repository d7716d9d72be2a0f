
-- Release lost: gives back a reservation whose reply never came (its connection failed or
-- timed out), if the reserve ran at all: its lease is found by the reservation's id on each
-- counter. KEYS = (counter, leases) per counter; ARGV = the reservation's id (digits).
local pattern = ARGV[1] .. '|*'
for i = 1, #KEYS / 2 do
  local L = KEYS[2 * i]
  local cursor = '0'
  repeat
    local page = redis.call('ZSCAN', L, cursor, 'MATCH', pattern, 'COUNT', 1000)
    cursor = page[1]
    for k = 1, #page[2], 2 do
      local member = page[2][k]
      local _, t, m = string.match(member, '^(%d+)|(%d+)|(%d+)$')
      if t then
        local u = load(KEYS[2 * i - 1], nil, 0)
        take(u, L, member, tonumber(t), big(m), '0')
        save(u)
      end
    end
  until cursor == '0'
end
return 1
