-- Cross-page boilerplate: count, per site, the distinct pages each paragraph is on.
-- KEYS[1]  the site's hash as versions before kept it (pages, last): read only when
--          neither generation's table has the site's field, never written
-- KEYS[2]  the site's table of this generation: fields s (the site: "<distinct pages
--          seen>|<when its last new page came>"), t<hash> (this text was seen: when),
--          a<hash> (this address was seen), p<hash> (distinct pages carrying that
--          paragraph), x (its EXPIREAT, ARGV[4], once it is set: one a generation)
-- KEYS[3]  the table of the generation before, read for what this one lacks
-- ARGV[1]  ttl in seconds (unused: the tables' EXPIREAT is ARGV[4])
-- ARGV[2]  now (seconds)
-- ARGV[3]  '1': the page may wait (it is short): return when its text was first seen
--          and when the site's last new page came
-- ARGV[4]  when this generation's table expires (unix seconds): the end of the next
--          generation, so a field lives a ttl at least after its last write
-- ARGV[5]  t<hash> of the page's text, ARGV[6] a<hash> of its address
-- ARGV[7..] p<hash> of each distinct paragraph
-- A page counts only when both its text and its address are new: a re-fetch, an
-- exact copy under another address, or an updated version at the same address, once.
-- A count (and the site's field) read from the generation before is written on into
-- this one, so a template in use never fades; one untouched for a generation does.
-- Returns {site_pages, first seen, site's last new page ('' unless new or asked),
-- count of ARGV[7], count of ARGV[8], ...} after this page.
local now, may_wait = ARGV[2], ARGV[3]
local fields = {}
for i = 5, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
local np = #fields  -- the text, the address, the paragraphs; then the site's field
fields[np + 1] = 's'
fields[np + 2] = 'x'
local values = redis.call('HMGET', KEYS[2], unpack(fields))
local expiring = values[np + 2] == ARGV[4]
fields[np + 2], values[np + 2] = nil, nil  -- this table's own: not read from the one before
local missing, at = {}, {}
for i = 1, #fields do
  if not values[i] then
    missing[#missing + 1] = fields[i]
    at[#at + 1] = i
  end
end
if #missing > 0 and KEYS[3] ~= KEYS[2] then
  local before = redis.call('HMGET', KEYS[3], unpack(missing))
  for j = 1, #missing do
    values[at[j]] = before[j]
  end
end
local pages, site_last
if values[np + 1] then
  local n, t = string.match(values[np + 1], '^(%d+)|(.*)$')
  pages, site_last = tonumber(n), t
else  -- a new site, or one a version before counted in its own hash
  local site = redis.call('HMGET', KEYS[1], 'pages', 'last')
  pages, site_last = tonumber(site[1] or '0'), site[2]
end
local new_text, new_address = not values[1], not values[2]
local new = new_text and new_address
local first, last = '', ''
if new_text then
  first = now
elseif may_wait == '1' then
  first = values[1]
end
local write = {}
if new then
  pages = pages + 1
  last = now
  write[#write + 1] = 's'
  write[#write + 1] = pages .. '|' .. now
elseif may_wait == '1' then
  last = site_last or ''
end
local out = {pages, first, last}
if new_text then
  write[#write + 1] = fields[1]
  write[#write + 1] = now
end
if new_address then
  write[#write + 1] = fields[2]
  write[#write + 1] = '1'
end
for i = 3, np do
  local count = tonumber(values[i] or '0')
  if new then
    count = count + 1
    write[#write + 1] = fields[i]
    write[#write + 1] = count
  end
  out[i + 1] = count
end
if #write > 0 then
  if not expiring then
    write[#write + 1] = 'x'
    write[#write + 1] = ARGV[4]
  end
  redis.call('HSET', KEYS[2], unpack(write))
  if not expiring then redis.call('EXPIREAT', KEYS[2], ARGV[4]) end
end
return out
