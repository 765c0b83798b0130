"""Mail authentication: SPF, DKIM, DMARC, ARC and Authentication-Results.

The inbound SMTP pipeline calls :func:`authenticate_message` once per message; the
outbound path signs with :func:`sign_dkim` (or :func:`sign_dkim_async`) and forwarders
seal with :func:`arc_seal`.  Every DNS lookup goes through :class:`mailserve.dns.Resolver`.
"""

from mailserve.mailauth.arc import ARCResult, arc_seal, arc_seal_async, verify_arc
from mailserve.mailauth.dkim import (
    DKIMResult,
    generate_dkim_key,
    sign_dkim,
    sign_dkim_async,
    verify_dkim,
)
from mailserve.mailauth.dmarc import DMARCResult, check_dmarc
from mailserve.mailauth.results import (
    AuthVerdict,
    authenticate_message,
    strip_authentication_results,
)
from mailserve.mailauth.spf import SPFResult, check_spf, check_spf_helo

__all__ = [
    "ARCResult",
    "AuthVerdict",
    "DKIMResult",
    "DMARCResult",
    "SPFResult",
    "arc_seal",
    "arc_seal_async",
    "authenticate_message",
    "check_dmarc",
    "check_spf",
    "check_spf_helo",
    "generate_dkim_key",
    "sign_dkim",
    "sign_dkim_async",
    "strip_authentication_results",
    "verify_arc",
    "verify_dkim",
]
