-- newsq backfill's progress, one hash per job (a WARC file): its plan, counters by
-- outcome, and a done mark per range; plus a hash per range in work of the record
-- offsets already counted, so a range delivered again counts each record once. Both
-- keys of a job share its hash tag (one slot on a Redis Cluster).
--
-- count:  KEYS = job, seen   ARGV = ttl, then offset, outcome pairs ('' for a record
--         that is no capture); counts each record once, returns how many were new
-- done:   KEYS = job, seen   ARGV = ttl, range index, bytes, now (seconds); marks the
--         range done once (its counters added, the job's 'last' time set), drops its
--         seen offsets, returns 1 when it was new

local command = ARGV[1]
local job, seen, ttl = KEYS[1], KEYS[2], ARGV[2]

if command == 'count' then
  local new = 0
  for i = 3, #ARGV, 2 do
    if redis.call('HSETNX', seen, ARGV[i], ARGV[i + 1]) == 1 then
      new = new + 1
      if ARGV[i + 1] ~= '' then
        redis.call('HINCRBY', job, ARGV[i + 1], 1)
      end
    end
  end
  if new > 0 then
    redis.call('EXPIRE', seen, ttl)
    redis.call('HINCRBY', job, 'records', new)
  end
  return new
elseif command == 'done' then
  redis.call('DEL', seen)
  if redis.call('HSETNX', job, 'done:' .. ARGV[3], 1) == 0 then
    return 0
  end
  redis.call('HINCRBY', job, 'ranges_done', 1)
  redis.call('HINCRBY', job, 'bytes_done', ARGV[4])
  if ARGV[5] then
    redis.call('HSET', job, 'last', ARGV[5])
  end
  redis.call('EXPIRE', job, ttl)
  return 1
end
return redis.error_reply('unknown command ' .. tostring(command))
