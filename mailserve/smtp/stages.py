"""The server's inbound delivery pipeline: which stage fills each named step.

``MailServer.delivery_pipeline`` calls :func:`build_pipeline` once; the SMTP listeners (and
anything else that delivers inbound mail) share that one pipeline.  Each step is built by
the package that owns it, so the SMTP package never learns how mail authentication, the
spam filter or Sieve work inside.
"""

from __future__ import annotations

from typing import Any

from mailserve.smtp.pipeline import DeliveryPipeline, IDeliveryStage, PassThroughStage

__all__ = ["build_pipeline"]


def mail_authentication_stage(server: Any) -> IDeliveryStage:
    """SPF, DKIM, DMARC and ARC results (``mailserve.mailauth``), as ``[mailauth]`` configures them.

    Authenticated sessions pass through it unchecked; with ``[mailauth] enabled = false`` it
    is a pass-through stage.
    """
    config = server.config
    if not config.mailauth.enabled:
        return PassThroughStage("mail authentication")
    from mailserve.mailauth.stage import AuthPolicy, MailAuthenticationStage

    spam_filter = getattr(server, "spam_filter", None)
    psl = spam_filter.psl if spam_filter is not None else None
    return MailAuthenticationStage(server.resolver, AuthPolicy.from_config(config), psl=psl)


def spam_verdict_stage(server: Any) -> IDeliveryStage:
    """The spam filter's verdict (``mailserve.spam``); a pass-through with ``[spam] enabled = false``."""
    spam_filter = getattr(server, "spam_filter", None)
    if spam_filter is None:
        return PassThroughStage("spam verdict")
    from mailserve.spam.stage import SpamVerdictStage

    return SpamVerdictStage(spam_filter, junk_mailbox=server.config.mailauth.junk_mailbox)


def sieve_stage(server: Any) -> IDeliveryStage:
    """Each recipient's active Sieve script (``mailserve.sieve``)."""
    from mailserve.sieve.stage import SieveStage

    return SieveStage.from_server(server)


def build_pipeline(server: Any) -> DeliveryPipeline:
    """The stages every inbound message passes, in order: later stages read earlier results."""
    return DeliveryPipeline([mail_authentication_stage(server), spam_verdict_stage(server), sieve_stage(server)])
