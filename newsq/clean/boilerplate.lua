-- Cross-page boilerplate: count, per site, the distinct pages each paragraph is on.
-- KEYS[1]  text marker   (SET NX: is this page's normalised text new to the site?)
-- KEYS[2]  address marker (SET NX: is this page's canonical address new to the site?)
-- KEYS[3]  site counter  (distinct pages of the site)
-- KEYS[4..] paragraph counters (distinct pages carrying that paragraph)
-- ARGV[1]  ttl in seconds, refreshed on every touch so live templates never expire
-- A page counts only when both its text and its address are new: a re-fetch, an
-- exact copy under another address, or an updated version at the same address, once.
-- Returns {site_pages, count of KEYS[4], count of KEYS[5], ...} after this page.
local ttl = tonumber(ARGV[1])
local new_text = redis.call('SET', KEYS[1], '1', 'NX', 'EX', ttl)
local new_address = redis.call('SET', KEYS[2], '1', 'NX', 'EX', ttl)
local new = new_text and new_address
local out = {}
if new then
  out[1] = redis.call('INCR', KEYS[3])
else
  out[1] = tonumber(redis.call('GET', KEYS[3]) or '0')
end
redis.call('EXPIRE', KEYS[3], ttl)
for i = 4, #KEYS do
  if new then
    out[i - 2] = redis.call('INCR', KEYS[i])
    redis.call('EXPIRE', KEYS[i], ttl)
  else
    out[i - 2] = tonumber(redis.call('GET', KEYS[i]) or '0')
  end
end
return out
