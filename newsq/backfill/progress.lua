-- newsq backfill's progress, one hash per job (a WARC file): its plan, counters by
-- outcome, and a done mark per range; plus a hash per range in work of the record
-- offsets already counted, so a range delivered again counts each record once.
--
-- count:  KEYS = job, seen   ARGV = ttl, offset, outcome ('' for a record that is no
--         capture); counts the record once, returns 1 when it was new
-- done:   KEYS = job, seen   ARGV = ttl, range index, bytes; marks the range done once
--         (its counters added), drops its seen offsets, returns 1 when it was new

local command = ARGV[1]
local job, seen, ttl = KEYS[1], KEYS[2], ARGV[2]

if command == 'count' then
  if redis.call('HSETNX', seen, ARGV[3], ARGV[4]) == 0 then
    return 0
  end
  redis.call('EXPIRE', seen, ttl)
  redis.call('HINCRBY', job, 'records', 1)
  if ARGV[4] ~= '' then
    redis.call('HINCRBY', job, ARGV[4], 1)
  end
  return 1
elseif command == 'done' then
  redis.call('DEL', seen)
  if redis.call('HSETNX', job, 'done:' .. ARGV[3], 1) == 0 then
    return 0
  end
  redis.call('HINCRBY', job, 'ranges_done', 1)
  redis.call('HINCRBY', job, 'bytes_done', ARGV[4])
  redis.call('EXPIRE', job, ttl)
  return 1
end
return redis.error_reply('unknown command ' .. tostring(command))
