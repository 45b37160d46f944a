"""Archives in: WARC files (CC-NEWS and the like) through the clean → dedup → store
stages without fetching their pages again.

``newsq backfill FILE_OR_URL...`` splits each file into spans of bytes
(:mod:`~newsq.backfill.progress`); a task per span (``newsq.backfill_range``, the bulk
lane of the process queue) reads the records that begin in it
(:mod:`~newsq.backfill.warc`, from a path or through Range requests,
:mod:`~newsq.backfill.source`) and hands each page to the pipeline
(:mod:`~newsq.backfill.step`).
"""
