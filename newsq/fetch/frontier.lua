-- The frontier: per-host queues of URLs waiting for their host's turn, and a schedule
-- of when each host may be fetched next (grant.lua is run in front of this file).
--
-- Keys of one host are named here from ARGV's prefix and the host (the politeness keys
-- of every host a dispatch takes): on Redis Cluster the frontier needs one shard.
--   <p>:frontier:<host>:<lane>  list    "lane|attempt|url" waiting, lane 0 fresh, 9 bulk
--   <p>:frontier:due            zset    hosts with URLs waiting -> when they may go next
--   <p>:frontier:hosts          hash    those hosts -> "rate|cap" their parker gave
--   <p>:frontier:pending        list    "lease|host|rate|cap|lane|attempt|url" popped by
--                                       the last dispatch and not yet confirmed sent
--   <p>:frontier:dispatcher     string  the dispatcher's lease: who may dispatch
-- A host is in 'due' exactly when one of its lanes holds URLs; every call keeps that.
--
-- park:     ARGV = 'park', prefix, host, rate, cap, lease, ttl, lane, attempt, url, front
--           a fetch asks for its host: when no URL of the host waits and grant()
--           allows, returns {1, '0'} (the lease is held); else queues the URL (at the
--           front of its lane when front = '1') and returns {0, "<seconds to its turn>"}
-- dispatch: ARGV = 'dispatch', prefix, holder, lease_ms, most, ttl, seed
--           only the holder of the dispatcher lease (taken when free, renewed here)
--           dispatches: first the records a dead holder popped and never confirmed go
--           back to the front of their lanes, then each due host gets a slot and gives
--           its next URL (fresh lane first), up to 'most' URLs; returns
--           {1, "<seconds to the next due host, -1 none>", record...} (the records are
--           also left in pending until the caller deletes it) or {0, "<seconds>"} for a
--           dispatcher that is not the holder
-- resign:   ARGV = 'resign', prefix, holder   drops the lease if holder has it
-- release:  ARGV = 'release', prefix, host, lease   a fetch is done: its lease goes, and
--           a host waiting for a free slot is due now

local command, prefix = ARGV[1], ARGV[2]
local base = prefix .. ':frontier:'
local due, hosts, pending = base .. 'due', base .. 'hosts', base .. 'pending'

local function polite(host)
  local p = prefix .. ':polite:'
  return p .. 'next:' .. host, p .. 'leases:' .. host, p .. 'rates', p .. 'crawl-delay:' .. host
end

local function lanes(host)
  return base .. host .. ':0', base .. host .. ':9'
end

local function waiting(host)
  local fresh, bulk = lanes(host)
  return redis.call('LLEN', fresh) + redis.call('LLEN', bulk)
end

if command == 'park' then
  local host, rate, cap, lease, ttl, lane = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
  local now = redis_now()
  local wait
  if waiting(host) == 0 then
    local next_key, leases, rates, delay = polite(host)
    local granted
    granted, wait = grant(next_key, leases, rates, delay, host, rate, cap, lease, ttl, now)
    if granted then
      return {1, '0'}
    end
  else
    wait = (tonumber(redis.call('ZSCORE', due, host)) or now) - now
  end
  local queue = base .. host .. ':' .. (lane == '9' and '9' or '0')
  local entry = lane .. '|' .. ARGV[9] .. '|' .. ARGV[10]
  if ARGV[11] == '1' then
    redis.call('LPUSH', queue, entry)
  else
    redis.call('RPUSH', queue, entry)
  end
  redis.call('HSET', hosts, host, rate .. '|' .. cap)
  redis.call('ZADD', due, 'NX', now + wait, host)
  return {0, string.format('%.6f', wait)}
elseif command == 'dispatch' then
  local holder, lease_ms, most, ttl, seed = ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[7]
  local lock = base .. 'dispatcher'
  local current = redis.call('GET', lock)
  if current and current ~= holder then
    return {0, string.format('%.6f', redis.call('PTTL', lock) / 1000)}
  end
  redis.call('SET', lock, holder, 'PX', lease_ms)
  local now = redis_now()

  -- 1. what the last dispatch popped and never confirmed sent (its holder died)
  local lost = redis.call('LRANGE', pending, 0, -1)
  for i = #lost, 1, -1 do  -- backwards: LPUSH puts the first back first
    local lease, host, rate, cap, entry = string.match(lost[i], '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
    local _, leases = polite(host)
    redis.call('ZREM', leases, lease)
    redis.call('LPUSH', base .. host .. ':' .. string.sub(entry, 1, 1), entry)
    redis.call('HSET', hosts, host, rate .. '|' .. cap)
    redis.call('ZADD', due, now, host)
  end
  if #lost > 0 then
    redis.call('DEL', pending)
  end

  -- 2. each due host's next URL, when its slot is granted
  local out = {1, ''}
  local taken = 0
  local ready = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, most)
  for _, host in ipairs(ready) do
    local conf = redis.call('HGET', hosts, host) or '0|0'
    local rate, cap = string.match(conf, '^([^|]*)|(.*)$')
    local next_key, leases, rates, delay = polite(host)
    local fresh, bulk = lanes(host)
    local again = now
    while taken < most do
      local lease = seed .. ':' .. taken
      local granted, wait = grant(next_key, leases, rates, delay, host, rate, cap, lease, ttl, now)
      if not granted then
        again = now + wait
        break
      end
      local entry = redis.call('LPOP', fresh) or redis.call('LPOP', bulk)
      if not entry then  -- (cannot happen while 'due' holds the host: kept safe anyway)
        redis.call('ZREM', leases, lease)
        break
      end
      taken = taken + 1
      local record = lease .. '|' .. host .. '|' .. conf .. '|' .. entry
      redis.call('RPUSH', pending, record)
      out[#out + 1] = record
      if wait > 0 then  -- a rate: the next URL waits its interval
        again = now + wait
        break
      end
    end
    if waiting(host) > 0 then
      redis.call('ZADD', due, again, host)
    else
      redis.call('ZREM', due, host)
      redis.call('HDEL', hosts, host)
    end
  end
  local first = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
  out[2] = first[2] and string.format('%.6f', math.max(tonumber(first[2]) - now, 0)) or '-1'
  return out
elseif command == 'resign' then
  local lock = base .. 'dispatcher'
  if redis.call('GET', lock) == ARGV[3] then
    redis.call('DEL', lock)
  end
  return 0
elseif command == 'release' then
  local host = ARGV[3]
  local next_key, leases = polite(host)
  redis.call('ZREM', leases, ARGV[4])
  -- not before its next allowed time: a host held by its rate is not asked early
  local tat = tonumber(redis.call('GET', next_key) or '0') or 0
  redis.call('ZADD', due, 'XX', 'LT', math.max(redis_now(), tat), host)
  return 0
end
return redis.error_reply('unknown frontier command ' .. tostring(command))
