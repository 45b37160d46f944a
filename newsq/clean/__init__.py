"""The clean stage: a page's HTML down to its article text and metadata.

``extract`` (trafilatura plus newsq's rules) → ``rules`` (post-cleaning) →
``second_opinion`` (readability where the first result is doubtful) → ``chunks``
(continuations the first pass missed) → ``metadata``; ``boilerplate`` learns each
site's template paragraphs in Redis (``boilerplate.lua``).
"""
