"""The dedup stage: the same text or the same wire story, decided once per article.

``sketch`` turns a text into words, a content hash and a MinHash signature; ``index``
asks the LSH index in Redis (``dedup.lua``, one atomic call) whether it is a new story
or a copy of a known one.
"""
