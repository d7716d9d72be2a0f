
-- Settle: KEYS = marker bitmap, (counter, leases) per reserved counter, then the counters to
-- commit to. ARGV = now_ms, member ('' = nothing reserved), amount_tokens, amount_money,
-- actual_tokens, actual_money, reserved_count, marker_ttl_ms, marker bit, then per commit
-- counter: kind, slot, sn, ttl_ms, end_ms, index of the same counter among the reserved ones
-- (0 = none).
-- Applies once: every settle sets its marker bit (kept longer than settles are retried), so a
-- retry after a lost reply cannot count twice. Leases cannot tell on their own: a lease that
-- ran out is forgotten an hour later, and a settle arriving after that must still count (as
-- overshoot).
-- Reply: per commit counter, its usage (7 values).
local now, member = ARGV[1], ARGV[2]
local amt_t, amt_m = tonumber(ARGV[3]), big(ARGV[4])
local act_t, act_m = tonumber(ARGV[5]), big(ARGV[6])
local r = tonumber(ARGV[7])
local m = #KEYS - 1 - 2 * r
-- The counters committed to first: they know their window kind.
local commits = {}
for j = 1, m do
  local a = 9 + (j - 1) * 6
  commits[j] = load(KEYS[1 + 2 * r + j], ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3])
end
local apply = redis.call('SETBIT', KEYS[1], ARGV[9], 1) == 0
redis.call('PEXPIRE', KEYS[1], ARGV[8])
local held, reserved = {}, {}
if member ~= '' then
  for i = 1, r do
    reserved[i] = load(KEYS[2 * i], nil, 0)
    held[i] = take(reserved[i], KEYS[2 * i + 1], member, amt_t, amt_m, now) == 'held'
  end
end
local out = {}
for j = 1, m do
  local a = 9 + (j - 1) * 6
  local u, idx, slot = commits[j], tonumber(ARGV[a + 6]), tonumber(ARGV[a + 2])
  if apply then
    if idx > 0 and held[idx] then
      commit_on(u, act_t, act_m, math.min(act_t, amt_t), bigmin(act_m, amt_m), slot)
    else
      commit_on(u, act_t, act_m, 0, ZERO, slot)
    end
  end
  save(u, ARGV[a + 3], ARGV[a + 4], ARGV[a + 5])
  usage_reply(out, u)
end
for i = 1, r do
  save(reserved[i])
end
return out
