-- Cross-page boilerplate: count, per site, the distinct pages each paragraph is on.
-- KEYS[1]  text marker   (SET NX: is this page's normalised text new to the site?
--                         its value: when the text was first seen)
-- KEYS[2]  address marker (SET NX: is this page's canonical address new to the site?)
-- KEYS[3]  site counter  (distinct pages of the site)
-- KEYS[4]  when the site's last new page came
-- KEYS[5..] paragraph counters (distinct pages carrying that paragraph)
-- ARGV[1]  ttl in seconds, refreshed on every touch so live templates never expire
-- ARGV[2]  now (seconds)
-- ARGV[3]  '1': the page may wait (it is short): return when its text was first seen
--          and when the site's last new page came
-- A page counts only when both its text and its address are new: a re-fetch, an
-- exact copy under another address, or an updated version at the same address, once.
-- Returns {site_pages, first seen, site's last new page ('' unless new or asked),
-- count of KEYS[5], count of KEYS[6], ...} after this page.
local ttl, now, may_wait = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local new_text = redis.call('SET', KEYS[1], now, 'NX', 'EX', ttl)
local new_address = redis.call('SET', KEYS[2], '1', 'NX', 'EX', ttl)
local new = new_text and new_address
local pages
if new then
  pages = redis.call('INCR', KEYS[3])
else
  pages = tonumber(redis.call('GET', KEYS[3]) or '0')
end
redis.call('EXPIRE', KEYS[3], ttl)
local first, last = '', ''
if new_text then
  first = now
elseif may_wait == '1' then
  first = redis.call('GET', KEYS[1]) or ''
end
if new then
  redis.call('SET', KEYS[4], now, 'EX', ttl)
  last = now
elseif may_wait == '1' then
  last = redis.call('GET', KEYS[4]) or ''
end
local out = {pages, first, last}
for i = 5, #KEYS do
  if new then
    out[i - 1] = redis.call('INCR', KEYS[i])
    redis.call('EXPIRE', KEYS[i], ttl)
  else
    out[i - 1] = tonumber(redis.call('GET', KEYS[i]) or '0')
  end
end
return out
