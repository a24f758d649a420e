"""Domain error -> HTTP answer. The one place that decides what a client may learn.

Wrong, expired, used and dead codes share one 400; unknown emails and wrong passwords share one
401. Validation errors keep FastAPI's shape but never echo the submitted value back (it may be a
password or a code).
"""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from taxease_auth.errors import (
    EmailNotVerified,
    InvalidCode,
    InvalidCredentials,
    InvalidToken,
    RateLimited,
    WeakPassword,
)

INVALID_CODE = "Invalid or expired OTP"
INVALID_CREDENTIALS = "Invalid email or password"
EMAIL_NOT_VERIFIED = "Email address not verified"
INVALID_TOKEN = "Invalid token"
RATE_LIMITED = "Too many requests. Try again later."


def _detail(status: int, detail: object, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _invalid_code(_request: Request, _error: Exception) -> JSONResponse:
    return _detail(400, INVALID_CODE)


async def _invalid_credentials(_request: Request, _error: Exception) -> JSONResponse:
    return _detail(401, INVALID_CREDENTIALS)


async def _email_not_verified(_request: Request, _error: Exception) -> JSONResponse:
    return _detail(403, EMAIL_NOT_VERIFIED)


async def _invalid_token(_request: Request, _error: Exception) -> JSONResponse:
    return _detail(401, INVALID_TOKEN, {"WWW-Authenticate": "Bearer"})


async def _rate_limited(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RateLimited)
    return _detail(429, RATE_LIMITED, {"Retry-After": str(error.retry_after)})


async def _weak_password(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, WeakPassword)
    return _detail(
        422, [{"type": "weak_password", "loc": ["body", error.field], "msg": error.reason}]
    )


async def _validation_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    errors = [
        {"type": item["type"], "loc": item["loc"], "msg": item["msg"]} for item in error.errors()
    ]
    return _detail(422, jsonable_encoder(errors))


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    # FastAPI answers 400 "error parsing the body" for bytes that are not UTF-8 and for JSON
    # nested too deep to parse; both are invalid input like any other: 422, as documented.
    if error.status_code == 400 and isinstance(
        error.__cause__, UnicodeDecodeError | RecursionError
    ):
        return _detail(422, [{"type": "json_invalid", "loc": ["body"], "msg": "JSON decode error"}])
    return await http_exception_handler(request, error)


def install(app: FastAPI) -> None:
    app.add_exception_handler(InvalidCode, _invalid_code)
    app.add_exception_handler(InvalidCredentials, _invalid_credentials)
    app.add_exception_handler(EmailNotVerified, _email_not_verified)
    app.add_exception_handler(InvalidToken, _invalid_token)
    app.add_exception_handler(WeakPassword, _weak_password)
    app.add_exception_handler(RateLimited, _rate_limited)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
