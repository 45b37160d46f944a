"""The fetch stage: one URL to its page's bytes, safely and politely.

``client`` (httpx, deadlines, body cap, reason codes) over ``netguard`` (SSRF checks,
pinned addresses), ``politeness`` (per-host token bucket and slots shared in Redis,
``politeness.lua``), ``robots`` (robots.txt, cached) and ``decoding`` (bytes to text).
"""
