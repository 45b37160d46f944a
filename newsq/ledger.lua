-- newsq URL ledger: every URL's state, moved atomically with the state counters.
-- Keys share one hash tag ({prefix}) so each script stays on one Redis Cluster slot.
-- An entry lives while its URL is in flight; reaching a terminal state gives it an
-- EXPIRE of the retention (the store's urls table is the durable record), in the same
-- call that makes it terminal; leaving one (a retry) removes the expiry.
--
-- enqueue:  KEYS = counts, active, url_1..url_n   ARGV = now, url_1..url_n
--           claims each URL without an entry as 'queued'; returns 1 (claimed) or 0
--           (live entry: known) per URL
-- unclaim:  KEYS = counts, active, url_1..url_n   ARGV = now
--           drops the claims 'enqueue' made at now (the store knew those URLs); an
--           entry that moved since (a retry) is kept; returns how many were dropped
-- begin:    KEYS = url, counts, active   ARGV = state, now, url
--           a worker takes the URL; returns {previous state, deliveries}; a URL in a
--           terminal state is left as it is (the caller skips the work); the first
--           take sets t_start, reaching a terminal state sets t_done
-- move:     KEYS = url, counts, active, reasons, tput   ARGV = state, now, force, keep,
--           retention, url, field, value, ...
--           sets the state (a terminal state is left only with force=1) and fields;
--           reaching a terminal state also counts it in the throughput series (field
--           '<state>:<second>' of the minute's hash tput, kept for keep seconds; see
--           newsq/throughput.py); returns the previous state ('' for none)
-- note:     KEYS = url   ARGV = field, value, ...   sets fields of an existing entry
-- release:  KEYS = url   hands back a delivery of an existing entry

local TERMINAL = {stored = true, duplicate = true, skipped = true, failed = true}

local function set_state(url_key, counts, active, old, new, now)
  if old ~= new then
    if old then redis.call('HINCRBY', counts, old, -1) end
    redis.call('HINCRBY', counts, new, 1)
  end
  if TERMINAL[new] then
    redis.call('ZREM', active, url_key)
    redis.call('HSET', url_key, 't_done', now)
  else
    redis.call('ZADD', active, now, url_key)
  end
  redis.call('HSET', url_key, 'state', new, 't_upd', now)
end

local command = ARGV[1]

if command == 'enqueue' then
  local now = ARGV[2]
  local out = {}
  for i = 3, #KEYS do
    local url_key = KEYS[i]
    if redis.call('EXISTS', url_key) == 1 then
      out[#out + 1] = 0
    else
      redis.call('HSET', url_key, 'url', ARGV[i], 't_enq', now, 'attempts', 0, 'deliveries', 0)
      set_state(url_key, KEYS[1], KEYS[2], nil, 'queued', now)
      out[#out + 1] = 1
    end
  end
  return out
elseif command == 'unclaim' then
  local now = ARGV[2]
  local dropped = 0
  for i = 3, #KEYS do
    local url_key = KEYS[i]
    local state, t_upd = unpack(redis.call('HMGET', url_key, 'state', 't_upd'))
    if state == 'queued' and t_upd == now then
      redis.call('DEL', url_key)
      redis.call('ZREM', KEYS[2], url_key)
      redis.call('HINCRBY', KEYS[1], 'queued', -1)
      dropped = dropped + 1
    end
  end
  return dropped
elseif command == 'begin' then
  local url_key, state, now = KEYS[1], ARGV[2], ARGV[3]
  local old = redis.call('HGET', url_key, 'state')
  if old and TERMINAL[old] then
    return {old, 0}
  end
  redis.call('HSETNX', url_key, 'url', ARGV[4])
  local deliveries = redis.call('HINCRBY', url_key, 'deliveries', 1)
  redis.call('HSETNX', url_key, 't_start', now)
  set_state(url_key, KEYS[2], KEYS[3], old or nil, state, now)
  return {old or '', deliveries}
elseif command == 'move' then
  local url_key, state, now, force = KEYS[1], ARGV[2], ARGV[3], ARGV[4]
  local old = redis.call('HGET', url_key, 'state')
  if old and TERMINAL[old] and force ~= '1' then
    return old
  end
  redis.call('HSETNX', url_key, 'url', ARGV[7])
  redis.call('HSETNX', url_key, 't_enq', now)
  for i = 8, #ARGV, 2 do
    if ARGV[i + 1] == '' then
      redis.call('HDEL', url_key, ARGV[i])
    else
      redis.call('HSET', url_key, ARGV[i], ARGV[i + 1])
    end
  end
  redis.call('HSET', url_key, 'deliveries', 0)
  set_state(url_key, KEYS[2], KEYS[3], old or nil, state, now)
  if TERMINAL[state] then
    redis.call('EXPIRE', url_key, ARGV[6])
    local reason = redis.call('HGET', url_key, 'reason')
    if (state == 'failed' or state == 'skipped') and reason then
      redis.call('HINCRBY', KEYS[4], state .. ':' .. reason, 1)
    end
    redis.call('HINCRBY', KEYS[5], state .. ':' .. math.floor(tonumber(now)), 1)
    redis.call('EXPIRE', KEYS[5], ARGV[5])
  else
    redis.call('PERSIST', url_key)
  end
  return old or ''
elseif command == 'note' then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
  end
  return 0
elseif command == 'release' then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('HINCRBY', KEYS[1], 'deliveries', -1)
  end
  return 0
end
return redis.error_reply('unknown ledger command ' .. tostring(command))
