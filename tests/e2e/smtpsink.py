"""A mail sink on the host: an SMTP server (aiosmtpd) on 127.0.0.1 that
keeps every message it is given, exactly as it arrived. A guest's postfix
relays to it as ``[10.0.2.2]:PORT``, so a test sees the mail as it left the
server, the way a receiver would."""

from __future__ import annotations

import queue

from .guest import free_port


class SmtpSink:
    """``with SmtpSink() as sink:``; ``sink.port``, ``sink.next(timeout)``."""

    def __init__(self):
        self.port = free_port()
        self._messages: queue.Queue = queue.Queue()
        self._controller = None

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's handler hook
        self._messages.put((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK kept"

    def __enter__(self) -> "SmtpSink":
        from aiosmtpd.controller import Controller

        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self._controller.stop()

    def next(self, timeout: float = 120) -> tuple:
        """(envelope sender, recipients, the message's bytes) of the next mail;
        queue.Empty when none came in ``timeout`` seconds."""
        return self._messages.get(timeout=timeout)
