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
-- is taken, the next allowed time set), else false and the seconds to wait. The
-- frontier's dispatcher uses its parts: it takes the lease and each URL's rate time,
-- and a fetch that comes after its time takes a new one (frontier.lua 'claim').

-- The host's interval between requests: 1 / its rate (a run-time override first), or
-- its Crawl-delay when longer; 0 = no limit.
local function interval_of(rates, delay_key, host, rate)
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
  return interval
end

-- Concurrency: 0 when a lease is free, else the seconds to wait for one; and the leases
-- held (when cap > 0), so a caller that counts free leases need not ask again.
local function lease_wait(leases, cap, now, interval)
  cap = tonumber(cap)
  if cap <= 0 then
    return 0, 0
  end
  local held = redis.call('ZCARD', leases)
  if held >= cap then
    redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
    held = redis.call('ZCARD', leases)
    if held >= cap then
      local first = redis.call('ZRANGE', leases, 0, 0, 'WITHSCORES')
      return math.max(math.min(tonumber(first[2]) - now, math.max(interval, 0.25)), 0.001), held
    end
  end
  return 0, held
end

local function take_lease(leases, lease, ttl, now)
  ttl = tonumber(ttl)
  redis.call('ZADD', leases, now + ttl, lease)
  redis.call('PEXPIRE', leases, math.ceil(ttl * 1000) + 1000)
end

-- Rate, as the request starts: one per interval, no bursts beyond one. 0 when the
-- request may start now (its time is taken), else the seconds to wait.
local function rate_wait(next_key, interval, now)
  if interval > 0 then
    local tat = tonumber(redis.call('GET', next_key) or '0') or 0
    if tat > now then
      return tat - now
    end
    redis.call('SET', next_key, string.format('%.6f', now + interval),
               'PX', math.ceil(interval * 1000) + 1000)
  end
  return 0
end

-- Rate, for a dispatched fetch too late for its slot: takes the host's next slot (one
-- an interval after the last taken) and returns the seconds until it starts; when that
-- is over 'most', takes nothing and returns it (the fetch goes back to the frontier).
local function reserve(next_key, interval, now, most)
  if interval <= 0 then
    return 0
  end
  local start = math.max(tonumber(redis.call('GET', next_key) or '0') or 0, now)
  if start - now > most then
    return start - now
  end
  redis.call('SET', next_key, string.format('%.6f', start + interval),
             'PX', math.ceil((start + interval - now) * 1000) + 1000)
  return start - now
end

local function redis_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- told: the caller's reckoning of Redis' time, or nil. Only a host's rate needs the
-- exact time (TIME); a lease's expiry, seconds ahead, does with the caller's.
-- Returns granted, the interval or the seconds to wait, and the time it went by.
local function grant(next_key, leases, rates, delay_key, host, rate, cap, lease, ttl, told)
  local interval = interval_of(rates, delay_key, host, rate)
  local now = told
  if interval > 0 or not now then now = redis_now() end
  local wait = lease_wait(leases, cap, now, interval)
  if wait > 0 then
    return false, wait, now
  end
  wait = rate_wait(next_key, interval, now)
  if wait > 0 then
    return false, wait, now
  end
  take_lease(leases, lease, ttl, now)
  return true, interval, now
end

