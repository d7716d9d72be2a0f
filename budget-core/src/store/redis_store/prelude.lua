-- Shared by every budget-store script. Redis runs Lua 5.1, whose only number is a double:
-- token counts stay below 2^53 (the Rust side clamps them), and money, which needs up to 39
-- digits of yocto-dollars, is kept as decimal text and computed on in base-10^7 limbs (every
-- limb product and carry stays far below 2^53, so each step is exact).

local BASE = 10000000
local MAXT = 9007199254740991
local SLOTS = 60
-- Slots a counter keeps: now's and the SLOTS before it (the oldest straddles the window's start;
-- it is dropped only once all of it is older, so usage leaves up to one slot late, never early).
local LIVE = SLOTS + 1

local function big(s)
  if not s then return { 0 } end
  local i = #s
  if i <= 7 then return { tonumber(s) or 0 } end
  local t = {}
  while i > 0 do
    local j = i - 6
    if j < 1 then j = 1 end
    t[#t + 1] = tonumber(string.sub(s, j, i))
    i = j - 1
  end
  if #t == 0 then t[1] = 0 end
  return t
end

local function int(n)
  if n < 1e14 then return tostring(n) end
  return string.format('%.0f', n)
end

-- An integer below 2^53 as limbs, without going through text.
local function bignum(n)
  if n < BASE then return { n } end
  local t = {}
  while n > 0 do
    local q = math.floor(n / BASE)
    t[#t + 1] = n - q * BASE
    n = q
  end
  return t
end

local function bigstr(a)
  local n = #a
  if n == 1 then return tostring(a[1]) end
  while n > 1 and a[n] == 0 do n = n - 1 end
  local parts = { string.format('%d', a[n]) }
  for k = n - 1, 1, -1 do parts[#parts + 1] = string.format('%07d', a[k]) end
  return table.concat(parts)
end

local function bigcmp(a, b)
  local na, nb = #a, #b
  while na > 1 and a[na] == 0 do na = na - 1 end
  while nb > 1 and b[nb] == 0 do nb = nb - 1 end
  if na ~= nb then
    if na < nb then return -1 end
    return 1
  end
  for k = na, 1, -1 do
    if a[k] ~= b[k] then
      if a[k] < b[k] then return -1 end
      return 1
    end
  end
  return 0
end

local function bigzero(a)
  for k = 1, #a do
    if a[k] ~= 0 then return false end
  end
  return true
end

local function bigadd(a, b)
  if #b == 1 and b[1] == 0 then return a end
  if #a == 1 and a[1] == 0 then return b end
  local r, carry = {}, 0
  local n = math.max(#a, #b)
  for k = 1, n do
    local s = (a[k] or 0) + (b[k] or 0) + carry
    if s >= BASE then
      r[k] = s - BASE
      carry = 1
    else
      r[k] = s
      carry = 0
    end
  end
  if carry > 0 then r[n + 1] = carry end
  return r
end

-- a - b, floored at zero.
local function bigsub(a, b)
  if #b == 1 and b[1] == 0 then return a end
  if bigcmp(a, b) <= 0 then return { 0 } end
  local r, borrow = {}, 0
  for k = 1, #a do
    local d = a[k] - (b[k] or 0) - borrow
    if d < 0 then
      r[k] = d + BASE
      borrow = 1
    else
      r[k] = d
      borrow = 0
    end
  end
  return r
end

-- a / d rounded down, for a small whole d > 0.
local function bigdivsmall(a, d)
  local q, r = {}, 0
  for k = #a, 1, -1 do
    local cur = r * BASE + a[k]
    q[k] = math.floor(cur / d)
    r = cur - q[k] * d
  end
  return q
end

local function bigmin(a, b)
  if bigcmp(a, b) <= 0 then return a end
  return b
end

local function bigmul(a, b)
  if #b == 1 then
    -- One limb: a plain carry loop.
    local f, r, carry = b[1], {}, 0
    if f == 0 then return { 0 } end
    for i = 1, #a do
      local cur = a[i] * f + carry
      carry = math.floor(cur / BASE)
      r[i] = cur - carry * BASE
    end
    while carry > 0 do
      local q = math.floor(carry / BASE)
      r[#r + 1] = carry - q * BASE
      carry = q
    end
    return r
  end
  local r = {}
  for k = 1, #a + #b + 1 do r[k] = 0 end
  for i = 1, #a do
    local ai = a[i]
    if ai ~= 0 then
      local carry = 0
      for j = 1, #b do
        local cur = r[i + j - 1] + ai * b[j] + carry
        carry = math.floor(cur / BASE)
        r[i + j - 1] = cur - carry * BASE
      end
      local k = i + #b
      while carry > 0 do
        local cur = r[k] + carry
        carry = math.floor(cur / BASE)
        r[k] = cur - carry * BASE
        k = k + 1
      end
    end
  end
  return r
end

local function tadd(a, b)
  local s = a + b
  if s > MAXT then return MAXT end
  return s
end

local function tsub(a, b)
  if a <= b then return 0 end
  return a - b
end

-- The largest q <= limit with price * q <= budget (price > 0). A double quotient guesses; exact
-- products decide.
local function affordable(price, budget, limit)
  local function fits(q)
    return bigcmp(bigmul(price, bignum(q)), budget) <= 0
  end
  if fits(limit) then return limit end
  local lo, hi = 0, limit - 1
  local guess = math.floor(tonumber(bigstr(budget)) / tonumber(bigstr(price)))
  if guess < hi then
    if guess + 2 < hi then hi = guess + 2 end
    if guess > 2 and fits(guess - 2) then lo = guess - 2 end
  end
  while lo < hi do
    local mid = lo + math.ceil((hi - lo) / 2)
    if fits(mid) then lo = mid else hi = mid - 1 end
  end
  return lo
end

-- A request: a base, plus units of per_unit each, between min and max units.
local function request(args, at)
  local r = {
    bt = tonumber(args[at]), bm = big(args[at + 1]),
    ut = tonumber(args[at + 2]), um = big(args[at + 3]),
    min = tonumber(args[at + 4]), max = tonumber(args[at + 5]),
  }
  r.um_zero = bigzero(r.um)
  return r
end

local function amount(req, units)
  local t = tadd(req.bt, req.ut * units)
  local m = req.bm
  if units == 1 then
    m = bigadd(req.bm, req.um)
  elseif units > 0 and not req.um_zero then
    m = bigadd(req.bm, bigmul(req.um, bignum(units)))
  end
  return t, m
end

local function cap_of(t, m)
  local cap = {}
  if t ~= '' then cap.t = tonumber(t) end
  if m ~= '' then cap.m = big(m) end
  return cap
end

-- admission::decide: nil when it fits, else ('never' | 'notnow', 0 for tokens | 1 for money).
local function decide(cap, it, im, rt, rm)
  if cap.t and rt > cap.t then return 'never', 0 end
  if cap.m and bigcmp(rm, cap.m) > 0 then return 'never', 1 end
  if cap.t and tadd(it, rt) > cap.t then return 'notnow', 0 end
  if cap.m and bigcmp(bigadd(im, rm), cap.m) > 0 then return 'notnow', 1 end
  return nil
end

-- admission::fit: the most units that fit, or nil and why not even min fit.
local function fit(cap, it, im, req)
  local mt, mm = amount(req, req.min)
  local verdict, kind = decide(cap, it, im, mt, mm)
  if verdict then return nil, verdict, kind end
  local units = math.max(req.max, req.min)
  if cap.t and req.ut > 0 then
    local room = tsub(cap.t, tadd(it, req.bt))
    local q = math.floor(room / req.ut)
    if q * req.ut > room then q = q - 1 end
    if q < units then units = q end
  end
  if cap.m and not req.um_zero then
    local room = bigsub(cap.m, bigadd(im, req.bm))
    local q = affordable(req.um, room, units)
    if q < units then units = q end
  end
  if units < req.min then units = req.min end
  return units
end

-- A counter is a hash: rt, rm, n (reserved and in flight); ct, cm, at, am (committed and
-- admitted: for a rolling window, the running total of its live slots); kind ('t' task, 'c'
-- calendar, 'r' rolling), sn (rolling slot width), e (calendar end, ms); for rolling windows
-- also lo (the oldest slot the totals may still hold) and the slots themselves, fields s0..s60
-- as "slot|ct|cm|at|am", read only when a slot leaves the window or a refusal needs them.
-- Its leases are a sorted set of members "id|tokens|money": a held lease scores its expiry
-- (ms, > 0); a lease that ran out scores minus its expiry, and stays for an hour so that a
-- grant arriving late (or retried) can tell "expired" (its usage still counts) from "already
-- reported". Settles tell by their own marker instead, which outlives their retries.
--
-- Each script loads a counter once (one HMGET), works on it in Lua and writes back only the
-- fields it changed (one HSET).

local EXPIRED_KEPT_MS = 3600000
local ZERO = { 0 }

local function parse_slot(v)
  if not v then return nil end
  local n, ct, cm, at, am = string.match(v, '^(-?%d+)|(%d+)|(%d+)|(%d+)|(%d+)$')
  return { n = tonumber(n), ct = tonumber(ct), cm = big(cm), at = tonumber(at), am = big(am) }
end

local counters = {}

-- Moves a rolling counter's window to end at slot: takes the slots that left it off the
-- running totals.
local function age(u, slot)
  local lo = u.lo
  local dead = slot - LIVE -- slots up to this one have left the window
  if lo <= dead then
    if dead - lo >= LIVE then
      u.ct, u.cm, u.at, u.am = 0, ZERO, 0, ZERO
    else
      for k = lo, dead do
        local s = parse_slot(redis.call('HGET', u.H, 's' .. (k % LIVE)))
        if s and s.n == k then
          u.ct, u.cm = tsub(u.ct, s.ct), bigsub(u.cm, s.cm)
          u.at, u.am = tsub(u.at, s.at), bigsub(u.am, s.am)
        end
      end
    end
    u.lo = dead + 1
    u.committed_dirty = true
  end
  u.slot = slot
end

-- A rolling counter whose slot width changed (its limit's duration did): slot numbers of the
-- old width mean nothing in the new one. Every committed amount is kept, in the current slot:
-- it leaves the new window a whole window from now, late but never early.
local function rewindow(u, slot, width)
  local fields = {}
  for k = 0, LIVE - 1 do fields[#fields + 1] = 's' .. k end
  redis.call('HDEL', u.H, unpack(fields))
  redis.call('HSET', u.H, 's' .. (slot % LIVE), table.concat({ int(slot), int(u.ct),
    bigstr(u.cm), int(u.at), bigstr(u.am) }, '|'), 'sn', width)
  u.stored_sn, u.lo, u.slot = width, slot, slot
  u.committed_dirty = true
end

-- Loads counter H (read once per batch) and, for a rolling window, drops the slots that left
-- it (sn: the window's slot width, when the caller knows it). kind is nil where only the reserved part is touched (a release, a lease on an older
-- window); the first operation of the batch that names the kind sets it, whichever operation
-- loaded the counter first, so that its commits reach their slot and refresh the TTL. A later
-- slot (another caller's clock) moves the window on.
local function load(H, kind, slot, sn)
  local u = counters[H]
  if not u or u.deleted then
    local v = redis.call('HMGET', H, 'rt', 'rm', 'n', 'ct', 'cm', 'at', 'am', 'kind', 'lo', 'sn')
    u = {
      H = H, new = not v[8], created = not v[8], stored_lo = tonumber(v[9]),
      stored_sn = tonumber(v[10]),
      rt = tonumber(v[1] or '0'), rm = big(v[2]), n = tonumber(v[3] or '0'),
      ct = tonumber(v[4] or '0'), cm = big(v[5]), at = tonumber(v[6] or '0'), am = big(v[7]),
    }
    counters[H] = u
  end
  if kind and not u.kind then
    u.kind = kind
    u.slot = slot
    if kind == 'r' then
      u.lo = u.stored_lo or slot
      local width = tonumber(sn)
      if width and u.stored_sn and u.stored_sn ~= width and not u.new then
        rewindow(u, slot, width)
      else
        age(u, slot)
      end
    end
  elseif kind == 'r' and u.kind == 'r' and slot > u.slot then
    age(u, slot)
  end
  return u
end

-- The live slots of a rolling counter, oldest first (for a refusal's "frees at").
local function live_slots(u)
  local out = {}
  for k = math.max(u.lo, u.slot - SLOTS), u.slot do
    local s = parse_slot(redis.call('HGET', u.H, 's' .. (k % LIVE)))
    if s and s.n == k then out[#out + 1] = s end
  end
  return out
end

local function reserve_on(u, t, m)
  u.rt, u.rm, u.n = tadd(u.rt, t), bigadd(u.rm, m), u.n + 1
  u.reserved_dirty = true
end

local function unreserve_on(u, t, m)
  u.rt, u.rm, u.n = tsub(u.rt, t), bigsub(u.rm, m), tsub(u.n, 1)
  u.reserved_dirty = true
end

-- Commits on counter u; a rolling window's commit goes to slot (default: the counter's
-- current one), never older than the oldest slot its totals hold, so that it ages out.
local function commit_on(u, ct, cm, at, am, slot)
  u.ct, u.cm = tadd(u.ct, ct), bigadd(u.cm, cm)
  u.at, u.am = tadd(u.at, at), bigadd(u.am, am)
  u.committed_dirty = true
  if u.kind == 'r' then
    local n = slot or u.slot
    if n > u.slot then n = u.slot end
    if n < u.lo then n = u.lo end
    local field = 's' .. (n % LIVE)
    local s = parse_slot(redis.call('HGET', u.H, field))
    if not s or s.n ~= n then
      s = { n = n, ct = 0, cm = ZERO, at = 0, am = ZERO }
    end
    redis.call('HSET', u.H, field, table.concat({ int(n), int(tadd(s.ct, ct)),
      bigstr(bigadd(s.cm, cm)), int(tadd(s.at, at)), bigstr(bigadd(s.am, am)) }, '|'))
  end
end

-- Marks a counter to be written back when the script ends. With a ttl the counter is created
-- if new (recording what it is) and, for task and rolling windows, kept ttl ms more; without,
-- only an existing counter's changes are kept.
local pending = {}

local function save(u, sn, ttl, e)
  if ttl then
    u.create, u.sn, u.ttl, u.e = true, sn, ttl, e
  end
  if not u.queued then
    u.queued = true
    pending[#pending + 1] = u
  end
end

-- Writes back every marked counter once: only the fields that changed, one HSET.
local function flush()
  for _, u in ipairs(pending) do
    if not u.deleted and (not u.new or u.create) then
      local f = {}
      if u.reserved_dirty then
        f[#f + 1] = 'rt'; f[#f + 1] = u.rt
        f[#f + 1] = 'rm'; f[#f + 1] = bigstr(u.rm)
        f[#f + 1] = 'n'; f[#f + 1] = u.n
      end
      if u.committed_dirty then
        f[#f + 1] = 'ct'; f[#f + 1] = u.ct
        f[#f + 1] = 'cm'; f[#f + 1] = bigstr(u.cm)
        f[#f + 1] = 'at'; f[#f + 1] = u.at
        f[#f + 1] = 'am'; f[#f + 1] = bigstr(u.am)
      end
      if u.kind == 'r' then
        f[#f + 1] = 'lo'; f[#f + 1] = u.lo
      end
      if u.new and u.kind then
        f[#f + 1] = 'kind'; f[#f + 1] = u.kind
        f[#f + 1] = 'sn'; f[#f + 1] = u.sn
        f[#f + 1] = 'e'; f[#f + 1] = u.e
      end
      if #f > 0 then redis.call('HSET', u.H, unpack(f)) end
      if u.ttl and u.kind and (u.kind ~= 'c' or u.created) then
        redis.call('PEXPIRE', u.H, u.ttl)
      end
    end
  end
end

-- Gives back the reservations whose lease ran out: their holders died or hung.
local function purge(u, L, now)
  local expired = redis.call('ZRANGEBYSCORE', L, '0', now, 'WITHSCORES')
  if #expired == 0 then return end
  for k = 1, #expired, 2 do
    local _, t, m = string.match(expired[k], '^(%d+)|(%d+)|(%d+)$')
    unreserve_on(u, tonumber(t), big(m))
    redis.call('ZADD', L, -tonumber(expired[k + 1]), expired[k])
  end
  -- Forget leases that ran out over an hour ago (scores in (kept - now, 0)).
  redis.call('ZREMRANGEBYSCORE', L, '(' .. int(EXPIRED_KEPT_MS - tonumber(now)), '(0')
end

-- Ends one lease on a counter: 'held' (its amount is taken off what is reserved), 'expired'
-- (its lease ran out: a purge took it off, or this does), or nil (no such lease: settled or
-- released before).
local function take(u, L, member, t, m, now)
  local score = redis.call('ZSCORE', L, member)
  if not score then return nil end
  redis.call('ZREM', L, member)
  score = tonumber(score)
  if score <= 0 then return 'expired' end
  unreserve_on(u, t, m)
  if score <= tonumber(now) then return 'expired' end
  return 'held'
end

local function usage_reply(out, u)
  out[#out + 1] = u.ct
  out[#out + 1] = bigstr(u.cm)
  out[#out + 1] = u.at
  out[#out + 1] = bigstr(u.am)
  out[#out + 1] = u.rt
  out[#out + 1] = bigstr(u.rm)
  out[#out + 1] = u.n
end
