
-- Grant: a process's allowance on one counter (see allowance.rs). KEYS = counter, leases,
-- sequence. ARGV = now_ms, lease_until_ms, old lease member ('' = none), its tokens, its money,
-- committed tokens, money (the process's usage since its last grant), keep tokens, money
-- (granted whatever happens: it backs calls still in flight there), need tokens, money (must
-- fit, else a refusal), chunk tokens, money (the most to add beyond need), share (never add
-- more than 1/share of what is left), kind, slot, sn, ttl_ms, end_ms, cap_tokens, cap_money.
-- Ends the old lease, commits the usage (once: a lost reply's retry finds the lease gone) and
-- takes the new lease. Reply: {refused, never, cap_kind, lease id (0 = none), tokens, money,
-- then the counter's usage (7 values)}.
local now, lease_until, member = ARGV[1], ARGV[2], ARGV[3]
local old_t, old_m = tonumber(ARGV[4]), big(ARGV[5])
local c_t, c_m = tonumber(ARGV[6]), big(ARGV[7])
local keep_t, keep_m = tonumber(ARGV[8]), big(ARGV[9])
local need_t, need_m = tonumber(ARGV[10]), big(ARGV[11])
local chunk_t, chunk_m = tonumber(ARGV[12]), big(ARGV[13])
local share = tonumber(ARGV[14])
local kind, slot = ARGV[15], tonumber(ARGV[16])
local cap = cap_of(ARGV[20], ARGV[21])
local u = load(KEYS[1], kind, slot, ARGV[17])
purge(u, KEYS[2], now)
local state = 'none'
if member ~= '' then state = take(u, KEYS[2], member, old_t, old_m, now) end
if state == 'held' then
  commit_on(u, c_t, c_m, math.min(c_t, old_t), bigmin(c_m, old_m), slot)
elseif state ~= nil then
  -- No old lease, or it ran out: the usage still counts (as overshoot).
  if c_t > 0 or not bigzero(c_m) then commit_on(u, c_t, c_m, 0, ZERO, slot) end
end
local it, im = tadd(tadd(u.ct, u.rt), keep_t), bigadd(bigadd(u.cm, u.rm), keep_m)
local verdict, cap_kind = nil, 0
if need_t > 0 or not bigzero(need_m) then
  verdict, cap_kind = decide(cap, it, im, need_t, need_m)
end
local g_t, g_m = keep_t, keep_m
if not verdict then
  local b_t, b_m = tadd(it, need_t), bigadd(im, need_m)
  local x_t, x_m = chunk_t, chunk_m
  if cap.t then x_t = math.min(x_t, math.floor(tsub(cap.t, b_t) / share)) end
  if cap.m then x_m = bigmin(x_m, bigdivsmall(bigsub(cap.m, b_m), share)) end
  g_t, g_m = tadd(tadd(keep_t, need_t), x_t), bigadd(bigadd(keep_m, need_m), x_m)
end
local id = 0
if g_t > 0 or not bigzero(g_m) then
  id = redis.call('INCR', KEYS[3])
  reserve_on(u, g_t, g_m)
  redis.call('ZADD', KEYS[2], lease_until, int(id) .. '|' .. int(g_t) .. '|' .. bigstr(g_m))
  redis.call('PEXPIRE', KEYS[2], ARGV[18])
end
save(u, ARGV[17], ARGV[18], ARGV[19])
local out = { 0, 0, cap_kind or 0, id, g_t, bigstr(g_m) }
if verdict then
  out[1] = 1
  if verdict == 'never' then out[2] = 1 end
end
usage_reply(out, u)
return out
