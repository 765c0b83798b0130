"""What twistd runs: ``Options`` and ``makeService`` (Twisted's ``tap`` convention)."""

from __future__ import annotations

import signal
import sys

from twisted.python import usage

from mailserve.service import MailServer, StartupError


class Options(usage.Options):
    optParameters = [  # noqa: RUF012 - twisted.python.usage's convention
        ["config", "c", None, "configuration file (default: etc/mailserve.toml or /etc/mailserve/mailserve.toml)"],
    ]

    def postOptions(self) -> None:
        from mailserve.cli import _default_config_path
        from mailserve.config import ConfigError, load_config

        path = self["config"] or _default_config_path()
        try:
            self["loaded"] = load_config(path)
        except ConfigError as e:
            raise usage.UsageError("\n" + "\n".join(str(i) for i in e.issues)) from None
        except FileNotFoundError:
            raise usage.UsageError(f"no configuration file at {path}; pass --config=FILE") from None


class _TwistdMailServer(MailServer):
    """Under twistd a startup error is printed as a sentence and exits 1, not a traceback."""

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except StartupError as e:
            print(f"mailserve: {e}", file=sys.stderr)
            raise SystemExit(1) from None

    def startService(self) -> None:
        super().startService()
        from mailserve.runner import banner

        # twistd starts services before the reactor runs and installs its signal handlers.
        self.reactor.callWhenRunning(self._stop_cleanly_on_signals)
        print(banner(self), flush=True)

    def _stop_cleanly_on_signals(self) -> None:
        """SIGTERM and SIGINT stop the server and exit 0, as a service manager expects.

        twistd's own handlers make the process re-raise the signal after a clean shutdown
        (exit status "killed by SIGTERM"), which systemd and init scripts report as a failure.
        Called once the reactor runs, so these replace the reactor's handlers.
        """
        reactor = self.reactor

        def stop(signum: int, frame: object) -> None:
            self.log.info("received {signal}, shutting down", signal=signal.Signals(signum).name)
            reactor.callFromThread(reactor.stop)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)


def makeService(options: Options) -> MailServer:
    config = options["loaded"]
    server = _TwistdMailServer(config)
    if config.logging.path not in (None, "", "-"):
        from twisted.logger import globalLogPublisher

        from mailserve.logsetup import make_observer

        globalLogPublisher.addObserver(make_observer(config.logging))
    return server
