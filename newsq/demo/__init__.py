"""``newsq demo`` and the sample news site it runs on (also used by the benchmarks).

``site`` serves outlets built by ``build`` from the bundled pages in ``data/``, with
the copies and edits of ``edits`` and the briefs of ``pages``; ``run`` is the command;
``dedup_eval`` and ``clean_eval``: edited copies of gold texts and the scoring that
the benchmarks and tests share.
"""
