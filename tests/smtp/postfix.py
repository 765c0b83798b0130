"""A private Postfix instance on 127.0.0.1 for tests and benchmarks (Debian's postfix package).

Everything lives in one directory made for it (config, queue, data, log, virtual mailboxes);
the system Postfix is never touched.  Services run unchrooted so that nothing needs copying
into a chroot.  Mail for ``virtual_domain`` is stored in Maildirs under ``vmail/``; with
``relayhost`` set, everything else is relayed there (our server, in the tests).
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time


def available() -> bool:
    """Postfix is installed and we may start it (its master must run as root)."""
    return shutil.which("postfix") is not None and os.geteuid() == 0


class PrivatePostfix:
    def __init__(self, port: int, virtual_domain: str = "pf.test", users: tuple[str, ...] = ("user",),
                 relayhost: str | None = None, hostname: str = "postfix.test",
                 settings: dict[str, str] | None = None) -> None:
        self.port = port
        #: Extra main.cf parameters, e.g. ``smtpd_discard_ehlo_keywords`` to play an older MTA.
        self.settings = dict(settings or {})
        self.virtual_domain = virtual_domain
        self.users = users
        self.relayhost = relayhost
        self.hostname = hostname
        self.root = tempfile.mkdtemp(prefix="mailserve-postfix-")
        os.chmod(self.root, 0o755)  # the virtual(8) delivery agent runs as the mailbox owner

    @property
    def config_dir(self) -> str:
        return os.path.join(self.root, "etc")

    def _write_config(self) -> None:
        nobody = pwd.getpwnam("nobody")
        for sub in ("etc", "queue", "data", "vmail"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        os.chown(os.path.join(self.root, "vmail"), nobody.pw_uid, nobody.pw_gid)
        os.chown(os.path.join(self.root, "data"), pwd.getpwnam("postfix").pw_uid, -1)
        with open(os.path.join(self.config_dir, "vmailbox"), "w") as f:
            f.writelines(f"{user}@{self.virtual_domain} {self.virtual_domain}/{user}/\n" for user in self.users)
        main = {
            "compatibility_level": "3.6",
            "queue_directory": os.path.join(self.root, "queue"),
            "data_directory": os.path.join(self.root, "data"),
            "maillog_file": os.path.join(self.root, "maillog"),
            "maillog_file_prefixes": self.root,
            "myhostname": self.hostname,
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "virtual_mailbox_domains": self.virtual_domain,
            "virtual_mailbox_base": os.path.join(self.root, "vmail"),
            "virtual_mailbox_maps": f"texthash:{os.path.join(self.config_dir, 'vmailbox')}",
            "virtual_uid_maps": f"static:{nobody.pw_uid}",
            "virtual_gid_maps": f"static:{nobody.pw_gid}",
            "virtual_mailbox_limit": "0",
            "message_size_limit": "0",
            "alias_maps": "",
            "alias_database": "",
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "disable_dns_lookups": "yes",
            "biff": "no",
            "smtpd_banner": "$myhostname ESMTP",
            "smtp_tls_security_level": "none",
            "default_process_limit": "100",
            "relayhost": self.relayhost or "",
            "maximal_queue_lifetime": "1h",
            "bounce_queue_lifetime": "1h",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "queue_run_delay": "1s",
            **self.settings,
        }
        with open(os.path.join(self.config_dir, "main.cf"), "w") as f:
            f.writelines(f"{key} = {value}\n" for key, value in main.items())
        with open("/etc/postfix/master.cf") as f:
            master = f.read()
        lines = []
        for line in master.splitlines():
            if line.startswith("smtp ") and " inet " in line:
                line = re.sub(r"^smtp\s", f"127.0.0.1:{self.port} ", line)
            fields = line.split()
            if len(fields) >= 8 and not line.startswith((" ", "#")):
                fields[4] = "n"  # no chroot
                line = "  ".join(fields)
            lines.append(line)
        with open(os.path.join(self.config_dir, "master.cf"), "w") as f:
            f.write("\n".join(lines) + "\n")

    def _postfix(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["postfix", "-c", self.config_dir, *args], check=False, capture_output=True,
                              text=True, timeout=60)

    def start(self) -> PrivatePostfix:
        self._write_config()
        self._postfix("set-permissions")
        result = self._postfix("start")
        if result.returncode != 0:
            raise RuntimeError(f"postfix start failed: {result.stderr}{result.stdout}{self.log()}")
        deadline = time.monotonic() + 20
        import socket

        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"postfix did not listen on {self.port}: {self.log()}")

    def stop(self) -> None:
        """Stop the master and wait for it to exit (its pid file outlives it, so watch the pid)."""
        pid_file = os.path.join(self.root, "queue", "pid", "master.pid")
        try:
            with open(pid_file) as f:
                pid = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pid = None
        self._postfix("stop")
        deadline = time.monotonic() + 10
        while pid is not None and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        try:
            with open(os.path.join(self.root, "maillog")) as f:
                return f.read()
        except OSError:
            return ""

    def mailbox(self, user: str = "user") -> list[bytes]:
        """The messages delivered to ``user``'s Maildir, oldest first."""
        paths = sorted(glob.glob(os.path.join(self.root, "vmail", self.virtual_domain, user, "new", "*")),
                       key=os.path.getmtime)
        out = []
        for path in paths:
            with open(path, "rb") as f:
                out.append(f.read())
        return out

    def delivered_count(self, user: str = "user") -> int:
        return len(glob.glob(os.path.join(self.root, "vmail", self.virtual_domain, user, "new", "*")))
