"""Protocol factories for the ``smtp`` (MX) and ``submission`` listeners.

``build_mx`` and ``build_submission`` are the builders ``mailserve.listeners.PROTOCOLS`` names:
each takes the assembled server and one listener's configuration and returns the factory
that listener serves.  The factory holds what every session of the listener shares: the
settings, rate limits, the delivery pipeline, local delivery and the
outbound queue; the session (``mailserve.smtp.server``) holds only per-connection state.

The ``[smtp]`` limits are taken from the server's *current* configuration: each new session
gets its ``SessionSettings`` built from ``server.config`` as it is when the client connects
(the listener's own fields — TLS, submission, plaintext AUTH — kept), and the rate limiters
read their limits at every check.  So the live settings the admin API changes
(``mailserve.admin.settings.LIVE_SETTINGS``) apply to the next session or message, as a
Postfix ``reload`` does for new smtpd processes; a session keeps the limits it started with,
so what its EHLO advertised (SIZE, RFC 1870 §4) stays true for its whole life.
Connections are counted and limited before a session exists, once for every listener, by the
connection gate of ``mailserve.listeners``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger

from mailserve.mailauth.outbound import sender_domain_of
from mailserve.mailauth.stage import AUTH_VERDICT_NOTE
from mailserve.smtp.delivery import LocalDelivery
from mailserve.smtp.dsn import RecipientReport
from mailserve.smtp.limits import RateLimiter
from mailserve.smtp.pipeline import (
    DeliveryContext,
    DeliveryPipeline,
    Envelope,
    MessageRejected,
    Reply,
    render_headers,
)
from mailserve.smtp.server import AcceptedRecipient, SessionSettings, SMTPSession, recipients_for_pipeline

__all__ = ["SMTPFactory", "build_mx", "build_submission", "session_settings"]


class SMTPFactory(ServerFactory):
    """Builds ``SMTPSession`` objects and does the part of message acceptance they share."""

    log = Logger()
    noisy = False

    def __init__(
        self,
        settings: SessionSettings,
        core: Any,
        directory: Any,
        queue: Any = None,
        tls_context: Any = None,
        pipeline: DeliveryPipeline | None = None,
        rate_per_ip: int = 0,
        rate_per_sender: int = 0,
        quota_full_permanent: bool = False,
        clock: Any = time.monotonic,
        server: Any = None,
        signer: Any = None,
        auth_failure_delay: float = 0.0,
        reactor: Any = None,
    ) -> None:
        #: The listener's settings; the ``[smtp]`` limits in them are replaced by the current
        #: configuration's when the factory belongs to a server (see ``settings``).
        self.listener_settings = settings
        self._settings = settings
        self._settings_config: Any = None
        self.core = core
        self.directory = directory
        self.queue = queue
        #: A no-argument callable returning the TLS context factory (``None``: no TLS).
        self.tls_context = tls_context
        self.pipeline = pipeline or DeliveryPipeline()
        self.delivery = LocalDelivery(core, quota_full_permanent)
        #: The assembled server (for its metrics and its current configuration), when built by
        #: ``build_mx``/``build_submission``.
        self.server = server
        self.ip_rate = RateLimiter(self._live_limit("rate_per_ip", rate_per_ip), 60.0, clock)
        self.sender_rate = RateLimiter(self._live_limit("rate_per_sender", rate_per_sender), 60.0, clock)
        #: ``OutboundSigner``: DKIM for submissions, ARC seals for forwards (``None``: neither).
        self.signer = signer
        self._auth_failure_delay = auth_failure_delay
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor

    def _current_config(self) -> Any:
        """The server's configuration as it is now (``None`` for a factory without a server)."""
        return getattr(self.server, "config", None) if self.server is not None else None

    def _live_limit(self, name: str, fixed: int) -> int | Callable[[], int]:
        """``smtp.<name>`` read from the current configuration at every check, or ``fixed``."""
        if self._current_config() is None:
            return fixed
        return lambda: getattr(self.server.config.smtp, name)

    @property
    def settings(self) -> SessionSettings:
        """The settings a session starting now gets.

        The listener's fields, with the ``[smtp]`` limits of the server's current configuration
        (rebuilt only when the configuration object was replaced, which the admin API does for
        a live change).
        """
        config = self._current_config()
        if config is None:
            return self._settings
        if config is not self._settings_config:
            self._settings = session_settings(config, self.listener_settings)
            self._settings_config = config
        return self._settings

    @property
    def auth_failure_delay(self) -> float:
        """Seconds before a failed AUTH is answered (RFC 4954 leaves the cost of failing to the
        server; Postfix sleeps ``smtpd_error_sleep_time``).  ``auth.failure_delay`` is a live
        setting, so it is read from the server's current configuration at every failure."""
        config = self._current_config()
        return config.auth.failure_delay if config is not None else self._auth_failure_delay

    def buildProtocol(self, addr: Any) -> SMTPSession:
        session = SMTPSession(self)
        session.factory = self
        return session

    async def accept_message(self, envelope: Envelope, recipients: list[AcceptedRecipient], message: bytes) -> Reply:
        """Deliver locally and queue remotely; the reply for the end of DATA/BDAT.

        Fires only once every copy is durable.  When some local copies fail after others were
        stored, the client gets 250 (the message is ours now) and the sender a DSN for the
        failed recipients (RFC 3461 §5.2.3), as Postfix does; when all fail, the client gets
        the failure instead and nothing is stored.  Every outcome is counted on the server's
        metrics (received, delivered, queued, rejected by reason).
        """
        reply = await self._accept(envelope, recipients, message)
        if reply.code >= 400:
            self._count_rejected("delivery")
        elif self.metrics is not None:
            self.metrics.messages_received.labels(protocol=self.protocol).inc()
        return reply

    @property
    def protocol(self) -> str:
        """The metrics label of this listener's messages."""
        return "submission" if self.settings.submission else "smtp"

    @property
    def metrics(self) -> Any:
        return getattr(self.server, "metrics", None) if self.server is not None else None

    def _count_rejected(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.messages_rejected.labels(reason=reason).inc()

    async def _accept(self, envelope: Envelope, recipients: list[AcceptedRecipient],
                      message: bytes) -> Reply:
        contexts = recipients_for_pipeline(recipients)
        remote = [(address, r.notify, r.orcpt) for r in recipients for address in r.remote]
        original = message
        authenticated = self.settings.submission or envelope.authenticated_as is not None
        if authenticated and self.signer is not None:
            # RFC 6376 §2.2: the signer is the domain's own MTA, before the message leaves it
            # (or reaches local mailboxes, which then see exactly what remote ones see).
            message = await self.signer.sign_submission(message, sender_domain_of(message, envelope.mail_from))
        outcomes = []
        context = None
        if contexts or (remote and not authenticated):
            # Mail forwarded to remote addresses passes the checks too: a forwarder that relays
            # spam or DMARC-failing mail gets its own reputation hurt, and the results are what
            # the ARC seal records.
            context = DeliveryContext(envelope, message, contexts)
            try:
                await self.pipeline.run(context)
            except MessageRejected:
                self._count_rejected(_rejection_reason(context))
                raise
            if contexts:
                outcomes = await self.delivery.deliver(context)
        failed = [o for o in outcomes if o.failure is not None]
        if failed and len(failed) == len(outcomes) and not remote:
            temporary = [o.failure for o in failed if not o.failure.permanent]
            return temporary[0] if temporary else failed[0].failure
        if self.metrics is not None:
            delivered = sum(1 for o in outcomes if o.failure is None and o.mailbox is not None)
            if delivered:
                self.metrics.messages_delivered.inc(delivered)
        if remote:
            forwarded = await self._forwarded_copy(context, message)
            await self.queue.enqueue(envelope.mail_from, remote, forwarded, envid=envelope.envid,
                                     ret=envelope.ret, smtputf8=envelope.smtputf8, body=envelope.body)
            if self.metrics is not None:
                self.metrics.messages_queued.inc()
        reports = []
        for outcome in outcomes:
            recipient = outcome.recipient
            if outcome.failure is not None and _wants(recipient.notify, "FAILURE"):
                failure = outcome.failure
                reports.append(RecipientReport(recipient.address, "failed", failure.status,
                                               f"smtp; {failure.code} {failure.status} {failure.text}",
                                               original_recipient=recipient.orcpt))
            elif outcome.failure is None and "SUCCESS" in recipient.notify:
                reports.append(RecipientReport(recipient.address, "delivered", "2.0.0",
                                               original_recipient=recipient.orcpt))
        if reports and envelope.mail_from and self.queue is not None:
            await self.queue.report(envelope.mail_from, reports, original, envid=envelope.envid,
                                    ret=envelope.ret, arrival=envelope.received_at)
        return Reply(250, "2.0.0", f"Ok: queued as {envelope.queue_id}")

    async def _forwarded_copy(self, context: DeliveryContext | None, message: bytes) -> bytes:
        """What goes to remote recipients: for forwarded inbound mail, ARC-sealed (RFC 8617 §5.1).

        The seal records the Authentication-Results we computed on arrival, over the message
        with forged fields claiming our authserv-id already removed.
        """
        verdict = context.notes.get(AUTH_VERDICT_NOTE) if context is not None else None
        if verdict is None or self.signer is None:
            return message
        from mailserve.mailauth.stage import authentication_results_of

        try:
            return await self.signer.seal_forward(context.message, authentication_results_of(verdict))
        except Exception as error:  # noqa: BLE001 - a seal is an extra; the mail must still go
            self.log.warn("cannot ARC-seal forwarded message {queue_id}: {error}",
                          queue_id=context.envelope.queue_id, error=str(error))
            return render_headers([("Authentication-Results", authentication_results_of(verdict))]) + context.message


def _rejection_reason(context: DeliveryContext) -> str:
    """The ``reason`` label of a refused message, from what the pipeline stages left behind."""
    notes = context.notes
    verdict = notes.get("spam_verdict")
    if verdict is not None:
        action = getattr(getattr(verdict, "action", None), "value", "")
        if action == "greylist-defer":
            return "greylisted"
        if action == "reject":
            return "spam"
        return "policy"
    if AUTH_VERDICT_NOTE in notes:
        return "authentication"
    return "policy"


def _wants(notify: tuple[str, ...], kind: str) -> bool:
    """RFC 3461 §4.1: without NOTIFY, failures (and delays) are reported; NEVER reports nothing."""
    return kind in notify if notify else kind in ("FAILURE", "DELAY")


def session_settings(config: Any, listener_settings: SessionSettings) -> SessionSettings:
    """``listener_settings`` with the hostname and ``[smtp]`` limits of ``config``.

    What a new session of the listener runs with: the listener decides TLS, submission and
    plaintext AUTH; the configuration decides the limits of RFC 5321 §4.5.3 (sizes, counts,
    timeouts) and the loop limit of §6.3.
    """
    smtp = config.smtp
    return dataclasses.replace(
        listener_settings,
        hostname=config.server.hostname,
        max_message_size=smtp.max_message_size,
        max_recipients=smtp.max_recipients,
        max_line_length=smtp.max_line_length,
        max_command_length=smtp.max_command_length,
        command_timeout=smtp.command_timeout,
        data_timeout=smtp.data_timeout,
        max_errors=smtp.max_errors,
        max_received=smtp.max_received_headers,
    )


def _build(server: Any, listener: Any, submission: bool) -> SMTPFactory:
    config = server.config
    smtp = config.smtp
    settings = session_settings(config, SessionSettings(
        hostname=config.server.hostname,
        submission=submission,
        implicit_tls=listener.tls.implicit,
        starttls=listener.tls.starttls,
        allow_plaintext_auth=listener.allow_plaintext_auth,
    ))
    tls_context = server.tls_context_factory if (listener.tls.starttls or listener.tls.implicit) else None
    return SMTPFactory(
        settings,
        server.core,
        server.directory,
        queue=getattr(server, "outbound_queue", None),
        tls_context=tls_context,
        pipeline=getattr(server, "delivery_pipeline", None),
        rate_per_ip=smtp.rate_per_ip,
        rate_per_sender=smtp.rate_per_sender,
        quota_full_permanent=smtp.quota_full_permanent,
        server=server,
        signer=getattr(server, "outbound_signer", None),
        auth_failure_delay=config.auth.failure_delay,
        reactor=getattr(server, "reactor", None),
    )


def build_mx(server: Any, listener: Any) -> SMTPFactory:
    """The MX listener: mail for local domains from anyone, relaying only after AUTH."""
    return _build(server, listener, submission=False)


def build_submission(server: Any, listener: Any) -> SMTPFactory:
    """The submission listener (RFC 6409, RFC 8314): AUTH before MAIL, sender checked."""
    return _build(server, listener, submission=True)
