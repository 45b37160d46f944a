-- The key layout of before 0efc6b9 / 3792093 moved to today's (newsq.migrate).
-- Every call but 'fetch' names keys of one slot, so the ledger moves on a Redis
-- Cluster too; the fetch keys of before had no hash tag and lived on a single Redis.
--
-- adopt:  KEYS = new entry, its bucket's counts, active   ARGV = 'adopt', pttl, score,
--         field, value, ...   writes the entry unless one is there (a worker of today
--         made it, or a run before this one adopted it) and counts it; returns 1 or 0
-- drop:   KEYS = old counts, old active, old entry_1..n   ARGV = 'drop'
--         deletes each old entry and takes it out of the old counts and active set
-- carry:  KEYS = counts, reasons, mark   ARGV = 'carry', ttl, pairs of counts, state,
--         n, ..., reason, n, ...   adds what the old counters held beyond the moved entries
--         (entries that expired) once: the mark says it was added
-- fetch:  KEYS = old, new   ARGV = 'fetch', kind, tag   one old frontier or politeness
--         key into the new: renamed when the new is absent, else merged (a list's old
--         URLs go in front: they waited first); 'pending' URLs go back to the front of
--         their lanes; 'drop' deletes; returns the URLs moved (lists) or 1
-- renew / unlock:  KEYS = lock   ARGV = cmd, token, ms   the migration's lock

local TERMINAL = {stored = true, duplicate = true, skipped = true, failed = true}
local command = ARGV[1]

local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end

if command == 'adopt' then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    return 0
  end
  local state
  for i = 4, #ARGV, 2 do
    if ARGV[i] == 'state' then state = ARGV[i + 1] end
  end
  redis.call('HSET', KEYS[1], unpack(ARGV, 4))
  if tonumber(ARGV[2]) > 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
  end
  if state then
    redis.call('HINCRBY', KEYS[2], state, 1)
    if not TERMINAL[state] then
      redis.call('ZADD', KEYS[3], ARGV[3], KEYS[1])
    end
  end
  return 1
elseif command == 'drop' then
  for i = 3, #KEYS do
    local state = redis.call('HGET', KEYS[i], 'state')
    if state then
      redis.call('HINCRBY', KEYS[1], state, -1)
    end
    redis.call('ZREM', KEYS[2], KEYS[i])
    redis.call('DEL', KEYS[i])
  end
  return 0
elseif command == 'carry' then
  if redis.call('EXISTS', KEYS[3]) == 1 then
    return 0
  end
  local split = 4 + 2 * tonumber(ARGV[3])  -- the counts' pairs, then the reasons'
  for i = 4, #ARGV - 1, 2 do
    redis.call('HINCRBY', i < split and KEYS[1] or KEYS[2], ARGV[i], ARGV[i + 1])
  end
  redis.call('SET', KEYS[3], '1', 'EX', ARGV[2])
  return 1
elseif command == 'fetch' then
  local old, new, kind, tag = KEYS[1], KEYS[2], ARGV[2], ARGV[3]
  local kind_of = redis.call('TYPE', old)['ok']
  if kind_of == 'none' then
    return 0
  end
  if kind == 'pending' then  -- popped by a dispatcher of before, maybe never sent
    local records = cjson.decode(redis.call('GET', old))
    local at = now()
    for i = #records, 1, -1 do  -- backwards: LPUSH puts the first back first
      local host, rate, cap, entry =
        string.match(records[i], '^[^|]*|([^|]*)|([^|]*)|([^|]*)|[^|]*|(.*)$')
      local base = tag .. ':frontier:'
      redis.call('LPUSH', base .. host .. ':' .. string.sub(entry, 1, 1), entry)
      redis.call('HSETNX', base .. 'hosts', host, rate .. '|' .. cap)
      redis.call('ZADD', base .. 'due', 'LT', at, host)
    end
    redis.call('DEL', old)
    return #records
  end
  if kind == 'drop' then
    redis.call('DEL', old)
    return 0
  end
  local moved = kind_of == 'list' and redis.call('LLEN', old) or 1
  if redis.call('EXISTS', new) == 0 then
    redis.call('RENAME', old, new)  -- keeps its expiry
    return moved
  end
  if kind_of == 'list' then
    local items = redis.call('LRANGE', old, 0, -1)
    for i = #items, 1, -1 do
      redis.call('LPUSH', new, items[i])
    end
  elseif kind_of == 'zset' then  -- due: the earlier time; leases: all of them
    local items = redis.call('ZRANGE', old, 0, -1, 'WITHSCORES')
    for i = 1, #items, 2 do
      redis.call('ZADD', new, 'LT', items[i + 1], items[i])
    end
  elseif kind_of == 'hash' then  -- a value set since (rates, hosts) is the newer
    local items = redis.call('HGETALL', old)
    for i = 1, #items, 2 do
      redis.call('HSETNX', new, items[i], items[i + 1])
    end
  end  -- a string set since (next time, crawl-delay) is the newer: kept
  local left, kept = redis.call('PTTL', old), redis.call('PTTL', new)
  if left > kept and kept > 0 then
    redis.call('PEXPIRE', new, left)
  end
  redis.call('DEL', old)
  return moved
elseif command == 'renew' then
  if redis.call('GET', KEYS[1]) == ARGV[2] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[3])
  end
  return 0
elseif command == 'unlock' then
  if redis.call('GET', KEYS[1]) == ARGV[2] then
    return redis.call('DEL', KEYS[1])
  end
  return 0
end
return redis.error_reply('unknown migrate command ' .. tostring(command))
