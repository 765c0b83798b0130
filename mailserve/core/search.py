"""Exact full-text search: index candidates, verified with IMAP substring semantics.

API
---
``MailSearch(core, index, indexer)``
``await MailSearch.matching(account, field, needle, message_ids) -> set[int]``
    Of ``message_ids``, those whose ``field`` ("body", "text", or a header field from
    ``SEARCH_FIELDS``) contains ``needle`` as a case-insensitive substring (RFC 9051
    §6.4.4), decoded (transfer encodings, charsets, encoded words).  Candidates come from
    the full-text index, messages the indexer has not reached yet are scanned, and every
    candidate is verified on its decoded text in a worker thread.
``MailSearch.for_account(account)``
    A text source for one account, as ``mailserve.imap.search.SearchContext`` wants.
"""
