
-- Reserve: KEYS = (counter, leases) per hard counter.
-- ARGV = now_ms, lease_until_ms, request (6), then per counter: kind, slot, sn, ttl_ms, end_ms,
-- cap_tokens, cap_money ('' = uncapped); last, the reservation's id (digits, chosen by the
-- caller so that it can find the lease again when the reply is lost).
-- Reply: {1, 0, units, tokens, money} or {0, counter, never, cap_kind, in_use_tokens,
-- in_use_money, frees_at_slot (-1 = unknown)}.
local now, lease_until = ARGV[1], ARGV[2]
local req = request(ARGV, 3)
local n = #KEYS / 2
local units = math.max(req.max, req.min)
local us = {}
for i = 1, n do
  local a = 8 + (i - 1) * 7
  local u = load(KEYS[2 * i - 1], ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3])
  us[i] = u
  purge(u, KEYS[2 * i], now)
  local cap = cap_of(ARGV[a + 6], ARGV[a + 7])
  local it, im = tadd(u.ct, u.rt), bigadd(u.cm, u.rm)
  local fits, verdict, cap_kind = fit(cap, it, im, req)
  if not fits then
    local frees = -1
    if verdict == 'notnow' and u.kind == 'r' then
      -- When enough committed usage will have left the rolling window.
      local mt, mm = amount(req, req.min)
      local et, em = tsub(tadd(it, mt), cap.t or MAXT), ZERO
      if cap.m then em = bigsub(bigadd(im, mm), cap.m) end
      local ft, fm = 0, ZERO
      for _, s in ipairs(live_slots(u)) do
        ft, fm = tadd(ft, s.ct), bigadd(fm, s.cm)
        if ft >= et and bigcmp(fm, em) >= 0 then
          frees = s.n + LIVE
          break
        end
      end
    end
    -- Keep what purging and ageing changed; create nothing.
    for j = 1, i do save(us[j]) end
    local never = 0
    if verdict == 'never' then never = 1 end
    return { 0, i, never, cap_kind, it, bigstr(im), frees }
  end
  if fits < units then units = fits end
end
local at, am = amount(req, units)
local member = ARGV[#ARGV] .. '|' .. int(at) .. '|' .. bigstr(am)
for i = 1, n do
  local a = 8 + (i - 1) * 7
  reserve_on(us[i], at, am)
  save(us[i], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5])
  local L = KEYS[2 * i]
  redis.call('ZADD', L, lease_until, member)
  redis.call('PEXPIRE', L, ARGV[a + 4])
end
return { 1, 0, units, at, bigstr(am) }
