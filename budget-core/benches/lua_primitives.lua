-- Costs of the budget-store scripts' primitives inside Redis's Lua (see BENCHMARKS.md):
--   cat budget-core/src/store/redis_store/prelude.lua budget-core/benches/lua_primitives.lua > /tmp/lua_primitives.lua
--   redis-cli --eval /tmp/lua_primitives.lua
-- Appended to prelude.lua, whose functions it times; keys under lb: are deleted at the end.
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local N = 20000
local out = {}
local a = big('3000000000000000000000')
local b = big('1234567890123456789012345678')
local t0 = now_us()
for i = 1, N do local x = big('3000000000000000000000') end
out[#out+1] = 'big(22 digits) ' .. (now_us() - t0) * 1000 / N .. ' ns'
t0 = now_us()
for i = 1, N do local x = bigadd(a, b) end
out[#out+1] = 'bigadd ' .. (now_us() - t0) * 1000 / N .. ' ns'
t0 = now_us()
for i = 1, N do local x = bigstr(b) end
out[#out+1] = 'bigstr ' .. (now_us() - t0) * 1000 / N .. ' ns'
t0 = now_us()
for i = 1, N do local x = bigcmp(a, b) end
out[#out+1] = 'bigcmp ' .. (now_us() - t0) * 1000 / N .. ' ns'
local p = big('2500000000000000000')
t0 = now_us()
for i = 1, N do local x = bigmul(p, bignum(800)) end
out[#out+1] = 'bigmul 1-limb ' .. (now_us() - t0) * 1000 / N .. ' ns'
t0 = now_us()
for i = 1, N do local x = affordable(p, b, 800) end
out[#out+1] = 'affordable fits ' .. (now_us() - t0) * 1000 / N .. ' ns'
t0 = now_us()
for i = 1, N do redis.call('HMGET', 'lb:h', 'rt', 'rm', 'n', 'ct', 'cm', 'at', 'am', 'kind', 'lo') end
out[#out+1] = 'HMGET 9 ' .. (now_us() - t0) * 1000 / N .. ' ns'
t0 = now_us()
for i = 1, N do redis.call('ZRANGEBYSCORE', 'lb:z', '0', 1000, 'WITHSCORES') end
out[#out+1] = 'ZRANGEBYSCORE empty ' .. (now_us() - t0) * 1000 / N .. ' ns'
t0 = now_us()
for i = 1, N do redis.call('ZADD', 'lb:z2', 5000, 'x' .. i .. '|1200|3000000000000000000000') end
out[#out+1] = 'ZADD ' .. (now_us() - t0) * 1000 / N .. ' ns'
t0 = now_us()
for i = 1, N do redis.call('ZSCORE', 'lb:z2', 'x' .. i .. '|1200|3000000000000000000000'); redis.call('ZREM', 'lb:z2', 'x' .. i .. '|1200|3000000000000000000000') end
out[#out+1] = 'ZSCORE+ZREM ' .. (now_us() - t0) * 1000 / N .. ' ns'
t0 = now_us()
for i = 1, N do redis.call('PEXPIRE', 'lb:h2', 100000) end
out[#out+1] = 'PEXPIRE ' .. (now_us() - t0) * 1000 / N .. ' ns'
t0 = now_us()
for i = 1, N do redis.call('HSET', 'lb:h2', 'rt', 5, 'rm', '3000000000000000000000', 'n', 2) end
out[#out+1] = 'HSET 3 ' .. (now_us() - t0) * 1000 / N .. ' ns'
redis.call('DEL', 'lb:z2', 'lb:h2')
return out
