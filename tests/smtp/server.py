"""An SMTP server for the tests: accepts every message and writes it, as received, to
<dir>/messages/<counter>.eml (000001.eml, 000002.eml, ... in the order they arrived; each
file appears whole, by rename).

While <dir>/refuse exists, DATA is answered 451 (try again later), or 550 (refused for
good) when the file contains `permanent`; nothing is written then.

While <dir>/stall exists, the answer to DATA comes that many seconds late.

AUTH (PLAIN, LOGIN) is offered without TLS and succeeds for the `user:password` written in
<dir>/auth; without that file every attempt fails (535). Mail without AUTH is accepted.

    python server.py --port 2525 --dir target/smtp
"""

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Handler:
    def __init__(self, directory: Path):
        self.directory = directory
        self.messages = directory / "messages"
        self.messages.mkdir(parents=True, exist_ok=True)
        self.count = len(list(self.messages.glob("*.eml")))

    def refusal(self):
        try:
            reason = (self.directory / "refuse").read_text()
        except FileNotFoundError:
            return None
        if "permanent" in reason:
            return "550 5.7.1 Refused for good (test)"
        return "451 4.3.0 Try again later (test)"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        try:
            expected = (self.directory / "auth").read_bytes().strip()
        except FileNotFoundError:
            return AuthResult(success=False, handled=False)
        ok = isinstance(auth_data, LoginPassword) and auth_data.login + b":" + auth_data.password == expected
        return AuthResult(success=ok, handled=False)

    async def handle_DATA(self, server, session, envelope):
        try:
            await asyncio.sleep(float((self.directory / "stall").read_text()))
        except FileNotFoundError:
            pass
        refusal = self.refusal()
        if refusal is not None:
            print(f"smtp: {refusal}", file=sys.stderr, flush=True)
            return refusal
        self.count += 1
        name = f"{self.count:06d}.eml"
        partial = self.messages / f".{name}.partial"
        partial.write_bytes(envelope.original_content)
        os.replace(partial, self.messages / name)
        print(f"smtp: {name} from {envelope.mail_from} to {envelope.rcpt_tos}", file=sys.stderr, flush=True)
        return "250 2.0.0 Stored"


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()

    handler = Handler(args.dir)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        # An explicit hostname: the default looks up the machine's FQDN, which can be slow.
        lambda: SMTP(
            handler,
            hostname="d2-test-smtp",
            enable_SMTPUTF8=True,
            authenticator=handler.authenticate,
            auth_require_tls=False,
        ),
        host="127.0.0.1",
        port=args.port,
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"smtp: listening on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
