-- dedup.lua: check AND write one copy in the shared dedup index, atomically.
--
-- Called by newsq/dedup/index.py (see its docstring for the layout). Every key shares the
-- hash tag of KEYS[1] ("{<prefix>:dedup}"), so the script runs on one node in Cluster.
--   <base>:seq                 doc id counter (no expiry)
--   <base>:b:<gen>             the table: one hash per generation
--       url / final / canonical digests (8 bytes) -> url record
--                                          "<o|a><kind><th8><sim4><docid>"
--                                          (o: the copy's own url, a: an alias)
--       "<bucket>" (decimal, of a digest's bytes 1-3) -> packed entries, 13 bytes each:
--                                          a text or band digest (8), its docid (5)
--       "d<docid>"                         the doc record: story(8) nsh(4) sig(2K)
--                                          root url
--       "x"                                the table's expiry, once it is set
-- <gen> is a time generation; a table expires (EXPIREAT, once: its field "x" says it
-- is set) a full window after its generation ends, and lookups read generations now ..
-- now-G, newest first: one HMGET of every field this copy may match per generation,
-- one HSET of what it adds (a new text's doc record with it). Text
-- and band entries, 25 an article, are packed ~table_fill to a field: as one field
-- each they cost ~60 bytes (a full hash's entry), packed ~14.
-- The layouts before (read, never written; ARGV[12] holds "t" while a live
-- generation has a table of one field per entry, "k" while it has the small hashes,
-- "d" while it has doc records in hashes of their own, see index.py):
--   <base>:d:<gen>:<bucket>    doc records: docid -> as the table's "d<docid>"
--   <base>:t:<gen>             one field per entry: the digest -> url record or docid
--   <base>:k:<gen>:<bucket>    the same entries, in small hashes by digest
--   <base>:f:<gen>             a filter of one bit per field put in <gen> (see bit_of)
--
-- PARAMS: the decision's parameters by name, a Lua table written into this text once per
--   index (DedupConfig.lua_params: generations, buckets, doc_buckets, filter_bits,
--   table_buckets, bands (full ones), jaccard, containment, short_jaccard, min_shingles,
--   long_shingles, long_jaccard, long_containment, min_lower): nothing to decode a call
-- ARGV: this copy's: 1 gen  2 expire_at  3 url  4 story_new (8 bytes)
--   5 url_f  6 final_f  7 canon_f  8 text_f (8-byte digests, "" for none)
--   9 th8  10 nshingles  11 sig (2 bytes a value)  12 layouts before to read ("tk")
--   13.. band digests: `bands` full ones, then the lead's (none: an empty text)
-- Returns {kind, story id (16 hex), duplicate_of or "", similarity (per mille)}.

local base = KEYS[1]
local P = PARAMS  -- DedupConfig.lua_params, written into this text by index.py
local G, nb, db, bits = P.generations, P.buckets, P.doc_buckets, P.filter_bits
local tb = P.table_buckets
local j_thr, c_thr, short_j = P.jaccard, P.containment, P.short_jaccard
local min_sh, long_sh = P.min_shingles, P.long_shingles
local long_j, long_c = P.long_jaccard, P.long_containment
local MIN_LOWER = P.min_lower  -- see near_score
local gen, expire_at = tonumber(ARGV[1]), ARGV[2]
local url, story_new = ARGV[3], ARGV[4]
local url_f, final_f, canon_f, text_f = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local th, nsh, sig = ARGV[9], tonumber(ARGV[10]), ARGV[11]
local old_table = string.find(ARGV[12], "t", 1, true)  -- read the tables before packing
local legacy = string.find(ARGV[12], "k", 1, true)  -- read the small hashes and filters
local own_docs = string.find(ARGV[12], "d", 1, true)  -- read the doc records' own hashes
local BAND0 = 13  -- ARGV index of the first band digest
local n_lead = math.max(#ARGV - BAND0 + 1 - P.bands, 0)  -- lead band digests (the last)
local byte, sub = string.byte, string.sub
local K = #sig / 2
local NAMES = {n = "new", u = "url", e = "exact", m = "near", r = "revision"}

local REC = 13  -- a packed entry: digest (8 bytes), docid (5)

local function bkey(g) return base .. ":b:" .. g end

-- The table field packing digest `f`'s entry.
local function bucket_of(f)
  local b1, b2, b3 = byte(f, 1, 3)
  return tostring((b1 * 65536 + b2 * 256 + b3) % tb)
end

-- The docid of digest `f` in packed entries `s`, or nil.
local function unpack_id(s, f)
  local i = 1
  while true do
    i = string.find(s, f, i, true)
    if not i then return nil end
    if (i - 1) % REC == 0 then
      local a, b, c, d, e = byte(s, i + 8, i + 12)
      return string.format("%.0f", (((a * 256 + b) * 256 + c) * 256 + d) * 256 + e)
    end
    i = i + 1
  end
end

local memo, memo_gen = {}, {}  -- field -> value or false, and the generation it is in
local expiring = false  -- this generation's table has its EXPIREAT (its field "x")
local bucket, current = {}, {}  -- packed field -> its bucket; bucket -> entries in gen
local fields = {}  -- every field a decide may look up: url ones, then packed ones
do
  local direct, names, named = {}, {}, {}
  for _, f in ipairs({url_f, final_f, canon_f}) do
    if f ~= "" then direct[#direct + 1] = f end
  end
  local packed = {}
  if text_f ~= "" then packed[1] = text_f end
  for i = BAND0, #ARGV do packed[#packed + 1] = ARGV[i] end
  for _, f in ipairs(packed) do
    local b = bucket_of(f)
    bucket[f] = b
    if not named[b] then names[#names + 1], named[b] = b, true end
  end
  for _, f in ipairs(direct) do fields[#fields + 1] = f end
  for _, f in ipairs(packed) do fields[#fields + 1] = f end
  for _, f in ipairs(fields) do memo[f] = false end
  local function offer(f, v, g)  -- newest first: the first value found wins
    if v and not (memo[f] and memo_gen[f] >= g) then memo[f], memo_gen[f] = v, g end
  end
  local reads = {}
  for _, f in ipairs(direct) do reads[#reads + 1] = f end
  for _, b in ipairs(names) do reads[#reads + 1] = b end
  reads[#reads + 1] = "x"
  for g = gen, gen - G, -1 do
    local got = redis.call("HMGET", bkey(g), unpack(reads))
    for i, f in ipairs(direct) do offer(f, got[i], g) end
    local entries = {}
    for j, b in ipairs(names) do entries[b] = got[#direct + j] end
    if g == gen then current, expiring = entries, got[#reads] == expire_at end
    for _, f in ipairs(packed) do
      local s = entries[bucket[f]]
      if s then offer(f, unpack_id(s, f), g) end
    end
  end
  if old_table then
    -- the table of one field per entry; where a generation has both, the packed one wins
    for g = gen, gen - G, -1 do
      local got = redis.call("HMGET", base .. ":t:" .. g, unpack(fields))
      for i, f in ipairs(fields) do offer(f, got[i], g) end
    end
  end
  if legacy then
    -- The layout before the tables: small hashes by digest (bucket of the digest's bytes
    -- 1-3), and per generation a filter string of one bit per field put (bit of its
    -- bytes 4-7) that says where an HGET may find it. A legacy value wins only where it
    -- is newer than a table's (a generation both layouts wrote: the table's).
    local args = {}
    for _, f in ipairs(fields) do
      local b4, b5, b6, b7 = byte(f, 4, 7)
      args[#args + 1] = "GET"
      args[#args + 1] = "u1"
      args[#args + 1] = (((b4 * 256 + b5) * 256 + b6) * 256 + b7) % bits
    end
    for g = gen, gen - G, -1 do
      local got = redis.call("BITFIELD_RO", base .. ":f:" .. g, unpack(args))
      for i, f in ipairs(fields) do
        if got[i] == 1 and not (memo[f] and memo_gen[f] >= g) then
          local b1, b2, b3 = byte(f, 1, 3)
          local key = base .. ":k:" .. g .. ":" .. ((b1 * 65536 + b2 * 256 + b3) % nb)
          local v = redis.call("HGET", key, f)
          if v then memo[f], memo_gen[f] = v, g end
        end
      end
    end
  end
end

-- The value of a field and the generation holding it, or nil.
local function find(field)
  if field == "" then return nil end
  local v = memo[field]
  if v then return v, memo_gen[field] end
  return nil
end

-- A doc record by id, looked for from generation `from` (the generation of the entry
-- pointing at it: a text or band entry is written with its doc, a url entry may point
-- at an older doc) down to the oldest live one.
local function doc(id, from)
  if not id then return nil end
  local n = tonumber(id)
  for g = from or gen, gen - G, -1 do
    local v = redis.call("HGET", bkey(g), "d" .. id)
    if not v and own_docs then
      v = redis.call("HGET", base .. ":d:" .. g .. ":" .. (n % db), id)
    end
    if v then return v end
  end
  return nil
end

local new_fields, new_values = {}, {}  -- this call's puts, in order: one HSET
local grown = {}  -- buckets this call added packed entries to, in order

local function put(field, value)
  if new_values[field] == nil then new_fields[#new_fields + 1] = field end
  new_values[field] = value
  memo[field], memo_gen[field] = value, gen
end

-- Puts a text or band digest's docid, packed into its bucket's field.
local function put_id(field, id)
  local b, n = bucket[field], tonumber(id)
  local high = math.floor(n / 4294967296)
  if not grown[b] then grown[#grown + 1], grown[b] = b, true end
  current[b] = (current[b] or "") .. field .. struct.pack(">BI4", high, n - high * 4294967296)
  memo[field], memo_gen[field] = id, gen
end

-- Writes this call's puts (before every return that follows a put).
local function flush()
  if #new_fields == 0 and #grown == 0 then return end
  local args = {}
  for _, f in ipairs(new_fields) do
    args[#args + 1] = f
    args[#args + 1] = new_values[f]
  end
  for _, b in ipairs(grown) do
    args[#args + 1] = b
    args[#args + 1] = current[b]
  end
  local key = bkey(gen)
  if not expiring then
    args[#args + 1] = "x"
    args[#args + 1] = expire_at
  end
  redis.call("HSET", key, unpack(args))
  if not expiring then
    redis.call("EXPIREAT", key, expire_at)
    expiring = true
  end
  new_fields, new_values, grown = {}, {}, {}
end

-- doc record fields
local function d_story(d) return sub(d, 1, 8) end
local function d_nsh(d)
  local a, b, c, e = byte(d, 9, 12)
  return ((a * 256 + b) * 256 + c) * 256 + e
end
local function d_sig(d) return sub(d, 13, 12 + 2 * K) end
local function d_root(d) return sub(d, 13 + 2 * K) end

-- Estimated Jaccard similarity, and containment of the smaller shingle set in the
-- larger. MinHash values keep order under truncation: where the smaller set S holds a
-- strictly lower value than the larger L, the union's minimum lies in S \ L; that
-- happens with probability |S \ L| / |S u L|, and |S u L| = (|S| + |L|) / (1 + J).
local function compare(cs, cn)
  if K == 0 or #cs ~= 2 * K or nsh == 0 or cn == 0 then return 0, 0, 0 end
  local q, c = {byte(sig, 1, -1)}, {byte(cs, 1, -1)}
  local m, q_lt, c_lt = 0, 0, 0
  for i = 1, 2 * K, 2 do
    local a, b = q[i] * 256 + q[i + 1], c[i] * 256 + c[i + 1]
    if a == b then m = m + 1 elseif a < b then q_lt = q_lt + 1 else c_lt = c_lt + 1 end
  end
  local j = m / K
  local small_n, small_lt = nsh, q_lt
  if cn < nsh then small_n, small_lt = cn, c_lt end
  if small_n < min_sh then return j, 0, small_n end
  local contain = 1 - (small_lt / K) * (nsh + cn) / (1 + j) / small_n
  if contain < 0 then contain = 0 end
  return j, contain, small_n, K * small_n * (1 + j) / (nsh + cn)
end

-- The similarity that makes a near copy, or nil: Jaccard first, else containment.
-- A short text (the smaller under long_sh shingles) needs Jaccard >= short_j: the
-- estimate is coarse there, and short pieces of one kind (local briefs) share half
-- their phrasing. A long one also matches on containment >= long_c with Jaccard >=
-- long_j: a copy trimmed to its lead whose page kept some lines the other's dropped
-- (inline related links, a dateline), which no unrelated long text comes near.
--
-- A set far smaller than the other holds a strictly lower value at few positions even
-- when disjoint from it (expected: `lower`, K * |S| / |S u L|); under MIN_LOWER the
-- containment estimate cannot tell contained from disjoint (an editor's note opening
-- the copy of a short story made it "contained" in an 8000-word one), so there a copy
-- trimmed to its lead is known by its lead instead: every lead band points at `d`.
local function near_score(d, lead_hits)
  local j, contain, small_n, lower = compare(d_sig(d), d_nsh(d))
  if lower and lower < MIN_LOWER and lead_hits < n_lead then contain = 0 end
  local long = small_n >= long_sh
  if j >= j_thr and (long or j >= short_j) then return j end
  if contain >= c_thr then return contain end
  if long and contain >= long_c and j >= long_j then return contain end
  return nil
end

local function permille(x) return string.format("%04d", math.floor(x * 1000 + 0.5)) end

local function hex(s)
  return (string.gsub(s, ".", function(ch) return string.format("%02x", byte(ch)) end))
end

local function verdict(kind, d, sim)
  local dup = ""
  if kind ~= "n" and kind ~= "r" then dup = d_root(d) end
  return {NAMES[kind], hex(d_story(d)), dup, sim}
end

local function index_doc(story, root)
  local id = tostring(redis.call("INCR", base .. ":seq"))
  put("d" .. id, story .. struct.pack(">I4", nsh) .. sig .. root)  -- in the table's HSET
  return id
end

local function index_bands(id)
  for i = BAND0, #ARGV do
    if not find(ARGV[i]) then put_id(ARGV[i], id) end
  end
end

-- 1. the copy's own url seen before: a replay (same text) or a revision (new text)
local rec, rec_gen = find(url_f)
local own = rec and sub(rec, 1, 1) == "o"
if own then
  local d = doc(sub(rec, 15), rec_gen)
  if d and sub(rec, 3, 10) == th then
    return verdict(sub(rec, 2, 2), d, sub(rec, 11, 14))
  end
  if d then
    local j = compare(d_sig(d), d_nsh(d))
    local sim = permille(j)
    local id = index_doc(d_story(d), d_root(d))
    if not find(text_f) then put_id(text_f, id) end
    index_bands(id)
    put(url_f, "or" .. th .. sim .. id)
    flush()
    return verdict("r", d, sim)
  end
end

-- 2. same url, final url or canonical url as an indexed copy, if the texts agree
local kind, match, match_id, sim = nil, nil, nil, nil
local aliases = {url_f, final_f, canon_f}
local seen = {}
for i, f in ipairs(aliases) do
  local v, g = nil, nil
  if f ~= "" then v, g = find(f) end
  seen[i] = v
  if v and not match then
    local d = doc(sub(v, 15), g)
    if d then
      local s = nil
      if sub(v, 3, 10) == th then s = 1 else s = near_score(d, 0) end
      if s or nsh == 0 or d_nsh(d) == 0 then
        kind, match, match_id, sim = "u", d, sub(v, 15), permille(s or 1)
      end
    end
  end
end

-- 3. same normalised text
local text_ref, text_gen = find(text_f)
local text_doc = nil  -- the doc the text entry points at, once read
if text_ref then text_doc = doc(text_ref, text_gen) end
if not match and text_ref then
  local d = text_doc
  if d then kind, match, match_id, sim = "e", d, text_ref, "1000" end
end

-- 4. near copy: candidates from the LSH bands, confirmed on their signatures
if not match and nsh > 0 then
  local ids, id_gen, lead_hits, best = {}, {}, {}, -1
  for i = BAND0, #ARGV do
    local id, g = find(ARGV[i])
    if id then
      if lead_hits[id] == nil then
        ids[#ids + 1] = id
        id_gen[id] = g
        lead_hits[id] = 0
      end
      if i > #ARGV - n_lead then lead_hits[id] = lead_hits[id] + 1 end
    end
  end
  for _, id in ipairs(ids) do
    local d = doc(id, id_gen[id])
    if d then
      local s = near_score(d, lead_hits[id])
      if s and s > best then kind, match, match_id, best = "m", d, id, s end
    end
  end
  if match then sim = permille(best) end
end

-- 5. write: a text not seen before is indexed (doc record, text digest, bands)
local story, root = story_new, url
if match then story, root = d_story(match), d_root(match) else kind, sim = "n", "1000" end
local ref = match_id
if not text_doc then
  -- the url record points at a doc holding this verdict's story, so a replay agrees
  ref = index_doc(story, root)
  put_id(text_f, ref)
  index_bands(ref)
end
put(url_f, "o" .. kind .. th .. sim .. ref)
for i = 2, 3 do
  if aliases[i] ~= "" and not seen[i] then put(aliases[i], "a" .. kind .. th .. sim .. ref) end
end
flush()
if not match then return {"new", hex(story), "", sim} end
return verdict(kind, match, sim)
