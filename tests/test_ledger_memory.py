"""What a URL's ledger entry costs in the Redis newsq starts for itself."""

from __future__ import annotations

import redis

from newsq.ledger import Ledger
from newsq.records import FETCHING, STORED
from newsq.workers.redis_server import RedisServer

URL = ("https://www.example-news-site.com/politics/2026/12/02/"
       "a-long-slug-of-the-story-title-here-12345.html")  # fmt: skip


def test_a_finished_entry_of_a_real_length_url_stays_compact() -> None:
    server = RedisServer().start()
    try:
        client = redis.Redis(port=server.port)
        ledger = Ledger(client, "memory")
        ledger.enqueue([URL])
        ledger.begin(URL, FETCHING)
        ledger.move(URL, STORED, story_id="a" * 32, final_url=URL)
        key = ledger.key(URL)
        # a URL over Redis' default 64 bytes a value made the entry a hash table: 1280 B
        assert client.object("encoding", key) in (b"listpack", b"ziplist")
        assert client.memory_usage(key) < 700
        client.close()
    finally:
        server.stop()
