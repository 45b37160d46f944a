"""The dedup stage: the same text or the same wire story, decided once per article.

``sketch`` turns a text into words, a content hash and a MinHash signature; ``index``
files it in the LSH index in Redis and says whether it is a new story or a copy of a
known one (``decision`` decides in the worker; ``commit.lua`` writes if nothing it read
changed meanwhile).
"""
