"""Organizational domains from the Public Suffix List (RFC 7489 section 3.2).

DMARC needs the Organizational Domain of the From domain both to find a policy record
when the From domain has none (section 6.6.3) and for relaxed alignment (section 3.1).
The list is the one bundled with the ``publicsuffixlist`` package: no network fetch at
run time, and it is updated by upgrading that package.
"""

from __future__ import annotations

from functools import cache

from publicsuffixlist import PublicSuffixList as _BundledList

from mailserve.dns import InvalidDomainName, normalize_domain

__all__ = ["PublicSuffixList"]


class PublicSuffixList:
    """An immutable, thread-safe view of a Public Suffix List.

    :param source: the list's text (``public_suffix_list.dat`` format); ``None`` uses the
        copy bundled with the ``publicsuffixlist`` package.
    """

    def __init__(self, source: str | bytes | None = None) -> None:
        # accept_unknown: a TLD missing from the list is still treated as public
        # (RFC 7489 section 3.2 step 3 needs *some* public suffix for every name).
        self._list = _BundledList(source=source, accept_unknown=True)

    @classmethod
    @cache
    def bundled(cls) -> PublicSuffixList:
        """The bundled list, parsed once per process (it is read-only after parsing)."""
        return cls()

    def public_suffix(self, domain: str) -> str | None:
        """The longest public suffix of ``domain`` (``co.uk`` for ``mail.example.co.uk``)."""
        try:
            name = normalize_domain(domain)
        except InvalidDomainName:
            return None
        return self._list.publicsuffix(name)

    def organizational_domain(self, domain: str) -> str:
        """RFC 7489 section 3.2: the public suffix plus one label.

        A name that is itself a public suffix is its own organizational domain.  Raises
        :class:`mailserve.dns.InvalidDomainName` for names that are not domain names.
        """
        name = normalize_domain(domain)
        private = self._list.privatesuffix(name)
        return private if private else name

    def same_organization(self, first: str, second: str) -> bool:
        """Relaxed alignment (RFC 7489 section 3.1): equal organizational domains."""
        try:
            return self.organizational_domain(first) == self.organizational_domain(second)
        except InvalidDomainName:
            return False
