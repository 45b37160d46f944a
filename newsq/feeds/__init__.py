"""Intake: feeds, sitemaps and URL lists to URLs, and feeds that poll themselves.

``parse`` (RSS/Atom via feedparser, sitemaps) → ``intake`` (gather, normalise, enqueue
each URL once) ; ``poll`` (feeds kept in the store, conditional GETs, adaptive
intervals).
"""
