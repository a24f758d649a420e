"""The framework's ceiling for ``make bench``: a bare FastAPI app that parses the verify-otp body.

One POST route at the same path as ``/api/v1/auth/verify-otp``: the body is parsed into a
pydantic model of the same shape (plain strings: no email canonicalisation, no code rules)
and a small JSON object comes back. No database, no limits, no logging, no middleware. It is
served by uvicorn with the options ``taxease-auth serve`` uses (one process, the same event loop
and HTTP parser, no proxy headers, no server header), so the ratio of an endpoint's requests/s
to this one's is what the service adds on top of the framework.

    python -m bench.reference_app --port 8100 --loop uvloop --http httptools
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel


class VerifyBody(BaseModel):
    email: str
    code: str
    purpose: str
    challenge_id: str | None = None


class Answer(BaseModel):
    message: str


app = FastAPI(title="bench reference")


@app.post("/api/v1/auth/verify-otp")
async def verify_otp(body: VerifyBody) -> Answer:
    return Answer(message="OTP verified successfully")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", default="auto")
    parser.add_argument("--http", default="auto")
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop=args.loop,
        http=args.http,
        log_config=None,
        proxy_headers=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
