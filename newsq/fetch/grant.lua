-- Per-host politeness, the decision shared by politeness.lua and frontier.lua (each
-- runs with this file in front of it).
--
-- A token bucket with a burst of 1 (GCRA: the "theoretical arrival time" of the next
-- allowed request), plus a cap on concurrent fetches held as expiring leases.
--
-- next     string  next allowed time of this host (seconds, Redis clock)
-- leases   zset    leases of this host: member = lease id, score = expiry time
-- rates    hash    rate overrides set at run time: host -> requests per second
-- delay    string  Crawl-delay from robots.txt for this host, seconds
--
-- grant() returns true and the host's interval when a fetch may start now (the lease
-- is taken, the next allowed time set), else false and the seconds to wait.

local function grant(next_key, leases, rates, delay_key, host, rate, cap, lease, ttl, now)
  rate = tonumber(rate)
  local override = redis.call('HGET', rates, host)
  if override then
    rate = tonumber(override)
  end
  local interval = 0
  if rate and rate > 0 then
    interval = 1 / rate
  end
  local delay = tonumber(redis.call('GET', delay_key) or '0') or 0
  if delay > interval then
    interval = delay
  end

  -- 1. concurrency: wait if every slot is taken by a lease that has not expired
  cap = tonumber(cap)
  if cap > 0 and redis.call('ZCARD', leases) >= cap then
    redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
    if redis.call('ZCARD', leases) >= cap then
      local first = redis.call('ZRANGE', leases, 0, 0, 'WITHSCORES')
      return false, math.min(tonumber(first[2]) - now, math.max(interval, 0.25))
    end
  end

  -- 2. rate: one request per interval, no bursts beyond one
  if interval > 0 then
    local tat = tonumber(redis.call('GET', next_key) or '0') or 0
    if tat > now then
      return false, tat - now
    end
    redis.call('SET', next_key, string.format('%.6f', now + interval),
               'PX', math.ceil(interval * 1000) + 1000)
  end

  -- 3. take a lease
  ttl = tonumber(ttl)
  redis.call('ZADD', leases, now + ttl, lease)
  redis.call('PEXPIRE', leases, math.ceil(ttl * 1000) + 1000)
  return true, interval
end

local function redis_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
