"""The states of an IMAP session (RFC 9051 §3).

Kept apart from ``protocol.py`` so the command modules, which move a session between
states (LOGIN, SELECT, CLOSE, LOGOUT), can name them without importing the protocol that
combines them.
"""

NOT_AUTHENTICATED, AUTHENTICATED, SELECTED, LOGOUT = "not-authenticated", "authenticated", "selected", "logout"
