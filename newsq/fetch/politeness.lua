-- Per-host politeness, atomically, on Redis' own clock: grant.lua's decision for one
-- fetch (grant.lua is run in front of this file).
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

local granted, wait = grant(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3],
                            ARGV[4], ARGV[5], nil)
if granted then
  return {1, '0'}
end
return {0, string.format('%.6f', wait)}
