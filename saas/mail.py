"""Outgoing mail: SMTP when MAIL_SERVER is set, otherwise written to the log (development)."""
from __future__ import annotations

import logging
import smtplib
from email.message import EmailMessage

from flask import current_app

log = logging.getLogger("huitou.mail")


def send_mail(to: str, subject: str, body: str) -> None:
    """Send a plain-text mail. In tests the message is also kept in the app's outbox."""
    cfg = current_app.config
    msg = EmailMessage()
    msg["From"] = cfg["MAIL_FROM"]
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    if cfg.get("TESTING"):
        current_app.extensions.setdefault("outbox", []).append(msg)
    if not cfg.get("MAIL_SERVER"):
        log.info("mail (no MAIL_SERVER set, not sent) to=%s subject=%s\n%s", to, subject, body)
        return
    with smtplib.SMTP(cfg["MAIL_SERVER"], cfg["MAIL_PORT"], timeout=15) as smtp:
        if cfg["MAIL_USE_TLS"]:
            smtp.starttls()
        if cfg.get("MAIL_USERNAME"):
            smtp.login(cfg["MAIL_USERNAME"], cfg["MAIL_PASSWORD"])
        smtp.send_message(msg)
