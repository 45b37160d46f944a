-- newsq URL ledger: every URL's state, moved atomically with the state counters.
-- The keys of one call are a URL's entry and its bucket's counters, under the bucket's
-- hash tag ({prefix:l:<b>}): each call stays on one Redis Cluster slot.
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
-- move:     KEYS = url, counts, active, reasons   ARGV = state, now, force, retention,
--           url, field, value, ...
--           sets the state (a terminal state is left only with force=1) and fields (a
--           field given as '' is removed); returns the previous state ('' for none)
-- note:     KEYS = url   ARGV = field, value, ...   sets fields of an existing entry
-- release:  KEYS = url   hands back a delivery of an existing entry
-- Each call reads the entry once (HMGET) and writes it once (HSET): only what changes.

local TERMINAL = {stored = true, duplicate = true, skipped = true, failed = true}

-- Moves the counters and the active set from state `old` to `new` (the entry's own
-- fields are the caller's, in its one HSET). A URL is in `active` while not terminal.
-- The counts hash holds URLs per state as fields named by a state (entries made in
-- it) and fields 'old>new' (moves, one HINCRBY each): a state's count is its field
-- plus the moves into it less the moves out (read_counts in ledger.py).
local function count_move(url_key, counts, active, old, new, now)
  if old ~= new then
    redis.call('HINCRBY', counts, old and (old .. '>' .. new) or new, 1)
  end
  if not TERMINAL[new] then
    redis.call('ZADD', active, now, url_key)
  elseif old and not TERMINAL[old] then
    redis.call('ZREM', active, url_key)
  end
end

-- The fields every move sets: the new state, when, and when it ended.
local function state_fields(set, state, now)
  set[#set + 1] = 'state'
  set[#set + 1] = state
  set[#set + 1] = 't_upd'
  set[#set + 1] = now
  if TERMINAL[state] then
    set[#set + 1] = 't_done'
    set[#set + 1] = now
  end
  return set
end

local command = ARGV[1]

if command == 'enqueue' then
  local now = ARGV[2]
  local out, added = {}, {}  -- added: score, member pairs of one ZADD
  for i = 3, #KEYS do
    local url_key = KEYS[i]
    if redis.call('EXISTS', url_key) == 1 then
      out[#out + 1] = 0
    else
      local set = {'url', ARGV[i], 't_enq', now, 'attempts', 0, 'deliveries', 0}
      redis.call('HSET', url_key, unpack(state_fields(set, 'queued', now)))
      added[#added + 1] = now
      added[#added + 1] = url_key
      out[#out + 1] = 1
    end
  end
  if #added > 0 then  -- the new entries counted and made active at once, not one by one
    redis.call('HINCRBY', KEYS[1], 'queued', #added / 2)
    redis.call('ZADD', KEYS[2], unpack(added))
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
  local old, t_start, has_url, deliveries = unpack(
    redis.call('HMGET', url_key, 'state', 't_start', 'url', 'deliveries'))
  if old and TERMINAL[old] then
    return {old, 0}
  end
  deliveries = (tonumber(deliveries) or 0) + 1
  local set = state_fields({'deliveries', deliveries}, state, now)
  if not t_start then
    set[#set + 1] = 't_start'
    set[#set + 1] = now
  end
  if not has_url then
    set[#set + 1] = 'url'
    set[#set + 1] = ARGV[4]
  end
  redis.call('HSET', url_key, unpack(set))
  count_move(url_key, KEYS[2], KEYS[3], old or nil, state, now)
  return {old or '', deliveries}
elseif command == 'move' then
  local url_key, state, now, force = KEYS[1], ARGV[2], ARGV[3], ARGV[4]
  local want, removed = {'state', 'url', 't_enq', 'reason'}, {}
  for i = 7, #ARGV, 2 do
    if ARGV[i + 1] == '' then
      removed[#removed + 1] = ARGV[i]
      want[#want + 1] = ARGV[i]
    end
  end
  local got = redis.call('HMGET', url_key, unpack(want))
  local old, reason = got[1] or nil, got[4] or nil
  if old and TERMINAL[old] and force ~= '1' then
    return old
  end
  local set = {'deliveries', 0}
  if not got[2] then
    set[#set + 1] = 'url'
    set[#set + 1] = ARGV[6]
  end
  if not got[3] then
    set[#set + 1] = 't_enq'
    set[#set + 1] = now
  end
  for i = 7, #ARGV, 2 do
    if ARGV[i + 1] ~= '' then
      set[#set + 1] = ARGV[i]
      set[#set + 1] = ARGV[i + 1]
      if ARGV[i] == 'reason' then reason = ARGV[i + 1] end
    end
  end
  redis.call('HSET', url_key, unpack(state_fields(set, state, now)))
  local gone = {}  -- only the removed fields that are there: no HDEL for nothing
  for j, name in ipairs(removed) do
    if got[4 + j] then gone[#gone + 1] = name end
    if name == 'reason' then reason = nil end
  end
  if #gone > 0 then redis.call('HDEL', url_key, unpack(gone)) end
  count_move(url_key, KEYS[2], KEYS[3], old, state, now)
  if TERMINAL[state] then
    redis.call('EXPIRE', url_key, ARGV[5])
    if (state == 'failed' or state == 'skipped') and reason then
      redis.call('HINCRBY', KEYS[4], state .. ':' .. reason, 1)
    end
  elseif old and TERMINAL[old] then
    redis.call('PERSIST', url_key)
  end
  return old or ''
elseif command == 'note' then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('HSET', KEYS[1], unpack(ARGV, 2))
  end
  return 0
elseif command == 'release' then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('HINCRBY', KEYS[1], 'deliveries', -1)
  end
  return 0
end
return redis.error_reply('unknown ledger command ' .. tostring(command))
