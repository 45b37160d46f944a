-- The frontier: per-host queues of URLs waiting for their host's turn, and a schedule
-- of when each host may be fetched next (grant.lua is run in front of this file).
--
-- Keys of one host are named here from ARGV's prefix and the host (the politeness keys
-- of every host a dispatch takes): on Redis Cluster the frontier needs one shard.
--   <p>:frontier:<host>:<lane>  list    "lane|attempt|url" waiting, lane 0 fresh, 9 bulk
--   <p>:frontier:due            zset    hosts with URLs waiting -> when they may go next
--   <p>:frontier:hosts          hash    those hosts -> "rate|cap" their parker gave
--   <p>:frontier:pending        string  JSON list of "lease|host|rate|cap|interval|slot|
--                                       lane|attempt|url" popped by the last dispatch,
--                                       until confirmed sent
--   <p>:frontier:dispatcher     string  the dispatcher's lease: who may dispatch
--   <p>:frontier:wake           list    one token: a release made a waiting host due
--                                       sooner; the lease holder blocks on it between
--                                       dispatches
-- A host is in 'due' exactly when one of its lanes holds URLs; every call keeps that.
--
-- park:     ARGV = 'park', prefix, host, rate, cap, lease, ttl, lane, attempt, url, front,
--           now (Redis time as the caller reckons it: TIME is read only for a rate)
--           a fetch asks for its host: when no URL of the host waits and grant()
--           allows, returns {1, the host's interval} (the lease is held); else
--           queues the URL (at the front of its lane when front = '1') and returns 0
-- dispatch: ARGV = 'dispatch', prefix, holder, lease_ms, most, ttl, seed, renew, sent,
--           recover, ahead
--           only the holder of the dispatcher lease (taken when free; renewed when
--           renew = '1') dispatches: when recover = '1' what is pending (a holder
--           before died, or the last send failed) goes back to the front of its lanes,
--           else sent = '1' says the last call's URLs were sent; then each due host
--           whose rate and concurrency allow a request gives its next URLs (fresh lane
--           first) with a concurrency lease each: a host with a rate those whose slots
--           start within 'ahead' seconds (one at least), each its slot taken (the record's
--           'slot', Redis time: its fetch starts then, or takes a new one if late), and
--           is due again 'ahead' before its next slot; up to 'most' URLs, which replace
--           what was pending; returns
--           {1, "<seconds to the next due host, -1 none>", record...} or
--           {0, "<seconds the lease has left>"} for a dispatcher that is not the holder
-- claim:    ARGV = 'claim', prefix, host, interval, most   a dispatched fetch that came
--           too late for its slot (or has none) takes its host's next slot: returns "<seconds until it starts>" (0: now), or, when
--           that is over 'most', the same without taking it (grant.lua's reserve)
-- resign:   ARGV = 'resign', prefix, holder   drops the lease if holder has it
-- release:  ARGV = 'release', prefix, host, lease, now (Redis time, as the caller
--           reckons it), '0' when its grant had no interval (no next time to read)
--           a fetch of a host without a rate is
--           done: its lease goes, and the host, if it waits for a free slot, is due now
--           (a host with a rate is due at its next allowed time anyway: the caller
--           only removes the lease)

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

if command == 'park' then
  local host, rate, cap, lease, ttl, lane = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
  local queued = redis.call('ZSCORE', due, host)  -- (a host is in 'due' while URLs wait)
  if not queued then
    local next_key, leases, rates, delay = polite(host)
    local told = tonumber(ARGV[12] or '')  -- (a caller of before sent none)
    local granted, wait, now = grant(next_key, leases, rates, delay, host, rate, cap, lease,
                                     ttl, told)
    if granted then
      return {1, string.format('%.6f', wait)}  -- (granted, grant() gives the interval)
    end
    redis.call('ZADD', due, now + wait, host)
    redis.call('HSET', hosts, host, rate .. '|' .. cap)
  end
  local queue = base .. host .. ':' .. (lane == '9' and '9' or '0')
  local entry = lane .. '|' .. ARGV[9] .. '|' .. ARGV[10]
  redis.call(ARGV[11] == '1' and 'LPUSH' or 'RPUSH', queue, entry)
  return 0
elseif command == 'dispatch' then
  local holder, lease_ms, most, ttl, seed = ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[7]
  local ahead = tonumber(ARGV[11] or '0') or 0
  local lock = base .. 'dispatcher'
  local current = redis.call('GET', lock)
  if not current then
    redis.call('SET', lock, holder, 'PX', lease_ms)
  elseif current ~= holder then
    return {0, string.format('%.6f', redis.call('PTTL', lock) / 1000)}
  elseif ARGV[8] == '1' then
    redis.call('PEXPIRE', lock, lease_ms)
  end
  local now = redis_now()

  -- 1. what was popped and never confirmed sent: back to the front of its lanes
  local held = false  -- pending holds records of the last call
  if ARGV[10] == '1' then
    local lost = redis.call('GET', pending)
    lost = lost and cjson.decode(lost) or {}
    for i = #lost, 1, -1 do  -- backwards: LPUSH puts the first back first
      local lease, host, rate, cap, rest =
        string.match(lost[i], '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|[^|]*|(.*)$')
      -- rest is "slot|lane|attempt|url", or "lane|attempt|url" as a dispatcher before
      -- slots wrote it (a URL is never all digits)
      local entry = string.match(rest, '^[^|]*|([09]|%d+|.*)$') or rest
      local _, leases = polite(host)
      redis.call('ZREM', leases, lease)
      redis.call('LPUSH', base .. host .. ':' .. string.sub(entry, 1, 1), entry)
      redis.call('HSET', hosts, host, rate .. '|' .. cap)
      redis.call('ZADD', due, now, host)
    end
    held = #lost > 0
  else
    held = ARGV[9] == '1'
  end

  -- 2. each due host's next URL, when its slot is granted
  local out = {1, ''}
  local records = {}
  local ready = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, most)
  for _, host in ipairs(ready) do
    local conf = redis.call('HGET', hosts, host) or '0|0'
    local rate, cap = string.match(conf, '^([^|]*)|(.*)$')
    local next_key, leases, rates, delay = polite(host)
    local fresh, bulk = lanes(host)
    local again = now
    local interval = interval_of(rates, delay, host, rate)
    -- a host with a rate gives, in one call, the URLs whose slots start within 'lead'
    -- (an interval at least), each with its slot, taken here: its fetch waits in its
    -- thread until then. Its next slot and free leases are read once, written once.
    local lead = interval > 0 and math.max(interval, ahead) or 0
    local tat = math.max(tonumber(redis.call('GET', next_key) or '0') or 0, now)
    local cap_n, free, taken, popped_all = tonumber(cap), nil, 0, false
    while #records < most do
      local wait = tat - lead - now
      if free == 0 and taken > 0 then
        -- its leases all taken here: due again as the last one's slot starts, when the
        -- ones before it have started (and, quick, given theirs back)
        if interval > 0 then again = tat - interval end
        break
      end
      if wait <= 0 and cap_n > 0 and (free == nil or free <= 0) then
        local lw, held = lease_wait(leases, cap, now, interval)
        if lw > 0 then wait = lw else free = cap_n - held end
      end
      if wait > 0 then
        again = now + wait
        break
      end
      local entry
      if redis.REDIS_VERSION_NUM and redis.REDIS_VERSION_NUM >= 0x070000 then
        local popped = redis.call('LMPOP', 2, fresh, bulk, 'LEFT')
        entry = popped and popped[2][1]
      else
        entry = redis.call('LPOP', fresh) or redis.call('LPOP', bulk)
      end
      if not entry then  -- the host's lanes are empty
        popped_all = true
        break
      end
      local lease = seed .. ':' .. #records
      redis.call('ZADD', leases, now + tonumber(ttl), lease)
      taken = taken + 1
      if free then free = free - 1 end
      local slot = interval > 0 and string.format('%.6f', tat) or '0'
      local record = table.concat({lease, host, conf, string.format('%.6f', interval), slot,
                                   entry}, '|')
      records[#records + 1] = record
      out[#out + 1] = record
      if interval > 0 then  -- the next URL's slot: an interval later
        tat = tat + interval
        again = tat - lead
      end
    end
    if taken > 0 then
      redis.call('PEXPIRE', leases, math.ceil(tonumber(ttl) * 1000) + 1000)
      if interval > 0 then  -- the slots given: the next free one is after them
        redis.call('SET', next_key, string.format('%.6f', tat),
                   'PX', math.ceil((tat - now) * 1000) + 1000)
      end
    end
    if not popped_all and redis.call('EXISTS', fresh, bulk) > 0 then
      redis.call('ZADD', due, math.max(again, now), host)
    else
      redis.call('ZREM', due, host)
      redis.call('HDEL', hosts, host)
    end
  end
  if #records > 0 then  -- the last call's records, if any, were sent (or put back)
    redis.call('SET', pending, cjson.encode(records))
  elseif held then
    redis.call('DEL', pending)
  end
  local first = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
  out[2] = first[2] and string.format('%.6f', math.max(tonumber(first[2]) - now, 0)) or '-1'
  return out
elseif command == 'claim' then
  local next_key = polite(ARGV[3])
  local wait = reserve(next_key, tonumber(ARGV[4]), redis_now(), tonumber(ARGV[5]))
  return string.format('%.6f', wait)
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
  -- not before its next allowed time: a host held by its rate is not asked early (one
  -- its caller was granted with no interval has none)
  local tat = 0
  if ARGV[6] ~= '0' then tat = tonumber(redis.call('GET', next_key) or '0') or 0 end
  local now = tonumber(ARGV[5] or '') or redis_now()  -- (a caller of before sent none)
  if redis.call('ZADD', due, 'XX', 'LT', 'CH', math.max(now, tat), host) == 1 then
    -- a waiting host is due sooner than the dispatcher planned: wake it (one token)
    local wake = base .. 'wake'
    redis.call('LPUSH', wake, '1')
    redis.call('LTRIM', wake, 0, 0)
    redis.call('EXPIRE', wake, 60)
  end
  return 0
end
return redis.error_reply('unknown frontier command ' .. tostring(command))
