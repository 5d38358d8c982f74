"""A real SMTP server for tests/tests/notifications.rs (PyPI aiosmtpd).

Usage: smtp_sink.py PORT DIR. Listens on 127.0.0.1:PORT and writes each
message it accepts to DIR as <n>.eml (the raw message as received) and
<n>.json (envelope sender and recipients, headers, and the text and HTML
parts decoded by Python's email package); prints "ready" once it listens.
"""

import email
import email.policy
import json
import os
import sys
import threading

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        base = os.path.join(self.directory, str(self.count))
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        text, html = message.get_body(("plain",)), message.get_body(("html",))
        summary = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "subject": str(message["subject"]),
            "from": str(message["from"]),
            "to": str(message["to"]),
            "message_id": str(message["message-id"]),
            "content_type": message.get_content_type(),
            "text": text.get_content() if text is not None else None,
            "html": html.get_content() if html is not None else None,
        }
        with open(base + ".eml", "wb") as f:
            f.write(raw)
        with open(base + ".json.tmp", "w") as f:
            json.dump(summary, f)
        os.rename(base + ".json.tmp", base + ".json")
        return "250 Message accepted for delivery"


def main():
    port, directory = int(sys.argv[1]), sys.argv[2]
    os.makedirs(directory, exist_ok=True)
    controller = Controller(Sink(directory), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    # The server runs in the controller's thread until the test kills us.
    threading.Event().wait()


if __name__ == "__main__":
    main()
