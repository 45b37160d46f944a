-- commit.lua: write one decide's entries into its generation's table, if nothing the
-- decide read there changed since; else "again" (the worker reads and decides again).
--
-- Called by newsq/dedup/index.py (DedupIndex.decide), which read the tables with plain
-- HMGETs and made the decision itself; dedup.lua's header gives the layout. Url
-- records are rewritten, so a check is "the same value"; packed fields only grow, so a
-- check is "the same length, or none of this copy's digests in what was appended".
-- KEYS: 1 the table written (the copy's generation)  2 the doc id counter
--   3.. other tables checked (the generation before, near its start: a worker whose
--   clock lags may still write there)
-- ARGV: 1 expire_at  2 the new doc record ("" for none)  3 the url records' doc id
--   ("" for the new doc's)  4 url records written  5 packed fields written
--   then for each checked table (KEYS[1], KEYS[3], ...): url checks n, packed checks m,
--   n x (field, its value as read or ""), m x (field, its length as read, this copy's
--   digests in it, 8 bytes each)
--   then the url writes, (field, the record without its doc id) each, and the packed
--   writes, (field, the digests appended with the doc id, 8 bytes each) each.
-- Returns the url records' doc id, or "again".

local REC = 13  -- a packed entry: digest (8 bytes), docid (5)
local sub, find = string.sub, string.find
local expire_at, doc, ref = ARGV[1], ARGV[2], ARGV[3]
local n_url, n_packed = tonumber(ARGV[4]), tonumber(ARGV[5])
local at = 6  -- the next ARGV to read

-- Whether digest `f` starts an entry of packed `s` at byte `from` or after.
local function holds(s, f, from)
  local i = from
  while true do
    i = find(s, f, i, true)
    if not i then return false end
    if (i - 1) % REC == 0 then return true end
    i = i + 1
  end
end

local tables = {KEYS[1]}
for k = 3, #KEYS do tables[#tables + 1] = KEYS[k] end
local current, expiring = {}, false  -- KEYS[1]'s packed fields as they are now
for t, key in ipairs(tables) do
  local nu, np = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
  local urls, packed = at + 2, at + 2 + 2 * nu
  at = packed + 3 * np
  local fields = {}
  for k = 0, nu - 1 do fields[#fields + 1] = ARGV[urls + 2 * k] end
  for k = 0, np - 1 do fields[#fields + 1] = ARGV[packed + 3 * k] end
  if t == 1 then fields[#fields + 1] = "x" end
  if #fields > 0 then
    local got = redis.call("HMGET", key, unpack(fields))
    for k = 0, nu - 1 do
      if (got[k + 1] or "") ~= ARGV[urls + 2 * k + 1] then return "again" end
    end
    for k = 0, np - 1 do
      local s, n = got[nu + k + 1] or "", tonumber(ARGV[packed + 3 * k + 1])
      if #s < n then return "again" end  -- the table expired and began again
      if #s > n then
        local mine = ARGV[packed + 3 * k + 2]
        for d = 1, #mine, 8 do
          if holds(s, sub(mine, d, d + 7), n + 1) then return "again" end
        end
      end
      if t == 1 then current[ARGV[packed + 3 * k]] = s end
    end
    if t == 1 then expiring = got[#fields] == expire_at end
  end
end

local args = {}
if doc ~= "" then
  ref = tostring(redis.call("INCR", KEYS[2]))
  args[1], args[2] = "d" .. ref, doc
end
for _ = 1, n_url do
  args[#args + 1] = ARGV[at]
  args[#args + 1] = ARGV[at + 1] .. ref
  at = at + 2
end
if n_packed > 0 then
  local n = tonumber(ref)
  local high = math.floor(n / 4294967296)
  local id = struct.pack(">BI4", high, n - high * 4294967296)
  for _ = 1, n_packed do
    local f, mine = ARGV[at], ARGV[at + 1]
    at = at + 2
    local parts = {current[f] or ""}
    for d = 1, #mine, 8 do parts[#parts + 1] = sub(mine, d, d + 7) .. id end
    args[#args + 1] = f
    args[#args + 1] = table.concat(parts)
  end
end
if not expiring then
  args[#args + 1] = "x"
  args[#args + 1] = expire_at
end
if #args > 0 then redis.call("HSET", KEYS[1], unpack(args)) end
if not expiring then redis.call("EXPIREAT", KEYS[1], expire_at) end
return ref
