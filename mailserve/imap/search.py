"""IMAP SEARCH, SORT and THREAD: parsing, evaluation and result formatting.

Token format (shared with the command parser, ``mailserve/imap/parser.py``): a command's
arguments are a list in which atoms are ``str``, quoted strings and literals are
``bytes``, and parenthesised lists are Python ``list`` objects of the same kinds.

API (used by the IMAP session)
------------------------------
``parse_search_command(tokens, utf8=False) -> SearchCommand``
    The arguments after ``SEARCH`` (or ``UID SEARCH``): optional ``RETURN (...)``
    (RFC 4731), optional ``CHARSET x``, then the keys.  ``SearchCommand.returns``,
    ``.charset``, ``.key``.  Raises ``SearchSyntaxError`` (answer BAD with its message)
    or ``BadCharset`` (answer ``NO [BADCHARSET (UTF-8 US-ASCII)]``).
``parse_search(tokens, charset="UTF-8") -> SearchKey``
    Just the search keys (for SORT and THREAD, after their own arguments).
``parse_sort_command(tokens) -> SortCommand`` / ``parse_thread_command(tokens) -> ThreadCommand``
    ``SORT (criteria) charset keys`` (RFC 5256 §3) and ``THREAD algorithm charset keys``.
``SearchContext(messages, ...)``
    What evaluation runs over: ``messages`` is the selected mailbox in sequence order as
    ``SearchMessage(seq, uid, message, recent)`` where ``message`` is the core's
    ``Message`` record; ``parsed(blob_id) -> ParsedMessage`` (the core's ``get_parsed``);
    ``text`` an object with ``async matching(field, needle, message_ids) -> set[int]``
    (``MailSearch.for_account(account)``); ``saved`` the SEARCHRES ``$`` UIDs.
``await evaluate(key, context, uid=False) -> list[int]``
    Matching sequence numbers (or UIDs when ``uid``), ascending.
``format_search(numbers, ...) / format_esearch(numbers, returns, tag, uid, ...)``
    ``* SEARCH`` / ``* ESEARCH`` response lines (RFC 4731 MIN MAX COUNT ALL, with
    sequence-set compression).  ``SAVE``: the session stores the matched UIDs itself.
``await sort(criteria, key, context, uid=False) -> list[int]``
    RFC 5256 SORT (ARRIVAL CC DATE FROM REVERSE SIZE SUBJECT TO, DISPLAYFROM/DISPLAYTO of RFC 5957).
``await thread(algorithm, key, context, uid=False) -> list[ThreadNode]`` and
``format_threads(nodes) -> bytes``
    ORDEREDSUBJECT and REFERENCES (RFC 5256 §3), then the ``* THREAD`` payload.
"""
