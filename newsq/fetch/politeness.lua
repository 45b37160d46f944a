-- Per-host politeness, atomically, on Redis' own clock.
--
-- A token bucket with a burst of 1 (GCRA: the "theoretical arrival time" of the next
-- allowed request), plus a cap on concurrent fetches held as expiring leases.
--
-- KEYS[1]  string  next allowed time of this host (seconds, Redis clock)
-- KEYS[2]  zset    leases of this host: member = lease id, score = expiry time
-- KEYS[3]  hash    rate overrides set at run time: host -> requests per second
-- KEYS[4]  string  Crawl-delay from robots.txt for this host, seconds
-- ARGV[1]  host
-- ARGV[2]  rate from settings (requests/s, 0 = no limit)
-- ARGV[3]  concurrency cap (0 = no cap)
-- ARGV[4]  lease id
-- ARGV[5]  lease lifetime in seconds (a crashed worker's slot frees itself after it)
--
-- Returns {1, "0"} when granted (a lease is held), else {0, "<seconds to wait>"}.

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000

local rate = tonumber(ARGV[2])
local override = redis.call('HGET', KEYS[3], ARGV[1])
if override then
  rate = tonumber(override)
end
local interval = 0
if rate and rate > 0 then
  interval = 1 / rate
end
local delay = tonumber(redis.call('GET', KEYS[4]) or '0') or 0
if delay > interval then
  interval = delay
end

-- 1. concurrency: drop expired leases, then wait if every slot is taken
local cap = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if cap > 0 and redis.call('ZCARD', KEYS[2]) >= cap then
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  local wait = math.min(tonumber(first[2]) - now, math.max(interval, 0.25))
  return {0, string.format('%.6f', wait)}
end

-- 2. rate: one request per interval, no bursts beyond one
if interval > 0 then
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
  if tat > now then
    return {0, string.format('%.6f', tat - now)}
  end
  redis.call('SET', KEYS[1], string.format('%.6f', now + interval),
             'PX', math.ceil(interval * 1000) + 1000)
end

-- 3. take a lease
local ttl = tonumber(ARGV[5])
redis.call('ZADD', KEYS[2], now + ttl, ARGV[4])
redis.call('PEXPIRE', KEYS[2], math.ceil(ttl * 1000) + 1000)
return {1, '0'}
