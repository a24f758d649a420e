"""The /api/v1/auth routes: parse, call the service, shape the answer. No SQL, no hashing."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response, status
from fastapi.responses import JSONResponse

from taxease_auth.api.deps import BEARER_SECURITY, bearer_user, caller
from taxease_auth.api.routing import api_router
from taxease_auth.api.schemas import (
    ErrorResponse,
    LoginChallengeResponse,
    LoginRequest,
    MessageResponse,
    PasswordResetConfirm,
    PasswordResetRequest,
    RegisterRequest,
    RegisterResponse,
    RequestOtpRequest,
    TokenResponse,
    UserResponse,
    VerifyOtpRequest,
    VerifyResponse,
)
from taxease_auth.auth.code_requests import accept_code_request
from taxease_auth.auth.login import LoginChallenge
from taxease_auth.auth.registration import Registration
from taxease_auth.auth.service import CodeSubmission
from taxease_auth.store.models import Purpose

router = api_router(prefix="/api/v1/auth", tags=["auth"])

# One text per flow whatever the account's state: the answer never tells whether it exists.
REGISTERED = "Registration received. Check your email for a verification code."
CODE_REQUESTED = "If the address needs a code, one has been sent. Check your email."
RESET_REQUESTED = "If an account exists for this address, a password reset code has been sent."
VERIFIED = "OTP verified successfully"
PASSWORD_RESET_DONE = "Password has been reset. Log in with your new password."

# An answer that carries tokens: no cache may keep it (RFC 6749 §5.1).
TOKENS_NOT_STORED = "no-store"

_RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {
        "model": ErrorResponse,
        "description": "A rate budget is spent; Retry-After says when to try again",
        "headers": {"Retry-After": {"description": "Seconds", "schema": {"type": "integer"}}},
    }
}
_INVALID_CODE: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid or expired OTP (one answer for all)"},
    **_RATE_LIMITED,
}


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=RegisterResponse,
    responses=_RATE_LIMITED,
)
async def register(body: RegisterRequest, request: Request) -> RegisterResponse:
    """Create an account and mail a verification code. The answer is the same for a new and an
    already-registered address (the owner of a verified address gets a notice instead), with
    a fresh `registration_id` to send with the code."""
    service, client_ip = caller(request)
    registration_id = await service.register(
        Registration(
            email=body.email,
            password=body.password,
            first_name=body.first_name,
            last_name=body.last_name,
            locale=body.locale,
        ),
        client_ip=client_ip,
    )
    return RegisterResponse(message=REGISTERED, registration_id=registration_id)


@router.post(
    "/verify-otp",
    response_model=VerifyResponse,
    response_model_exclude_none=True,
    responses=_INVALID_CODE,
)
async def verify_otp(
    body: VerifyOtpRequest, request: Request, response: Response
) -> VerifyResponse:
    """Check a mailed code. For purpose `login` the answer carries the access token."""
    service, client_ip = caller(request)
    token = await service.verify_code(
        CodeSubmission(
            body.email,
            body.code,
            body.purpose,
            client_ip,
            body.challenge_id,
            user_agent=request.headers.get("user-agent"),
            registration_id=body.registration_id,
        )
    )
    if token is None:
        return VerifyResponse(message=VERIFIED)
    response.headers["Cache-Control"] = TOKENS_NOT_STORED
    return VerifyResponse(
        message=VERIFIED,
        access_token=token.access_token,
        token_type="bearer",
        expires_in=token.expires_in,
        refresh_token=token.refresh_token,
    )


@router.post(
    "/request-otp",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=MessageResponse,
    responses=_RATE_LIMITED,
)
async def request_otp(body: RequestOtpRequest, request: Request) -> MessageResponse:
    """Mail a new code (it replaces the previous one). Same answer whether or not anything was
    sent. A `login` code is re-sent only for a live challenge from /login."""
    service, client_ip = caller(request)
    await accept_code_request(
        service,
        body.email,
        body.purpose,
        client_ip,
        challenge_id=body.challenge_id,
        registration_id=body.registration_id,
        locale=body.locale,
    )
    return MessageResponse(message=CODE_REQUESTED)


router.add_api_route(
    "/resend-otp",
    request_otp,
    methods=["POST"],
    name="resend_otp",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=MessageResponse,
    responses=_RATE_LIMITED,
    description="Alias of /request-otp.",
)


@router.post(
    "/login",
    response_model=TokenResponse,
    responses={
        202: {"model": LoginChallengeResponse, "description": "LOGIN_OTP_REQUIRED: code mailed"},
        401: {"model": ErrorResponse, "description": "Invalid email or password"},
        403: {"model": ErrorResponse, "description": "Correct password, email not verified"},
        **_RATE_LIMITED,
    },
)
async def login(
    body: LoginRequest, request: Request, response: Response
) -> TokenResponse | JSONResponse:
    """Log in with email and password. When LOGIN_OTP_REQUIRED is on, answer 202 with a
    challenge and mail a `login` code; /verify-otp with that challenge returns the token."""
    service, client_ip = caller(request)
    result = await service.login(
        body.email,
        body.password,
        client_ip=client_ip,
        user_agent=request.headers.get("user-agent"),
    )
    if isinstance(result, LoginChallenge):
        challenge = LoginChallengeResponse(
            challenge_id=result.challenge_id, expires_in=result.expires_in
        )
        return JSONResponse(challenge.model_dump(), status_code=status.HTTP_202_ACCEPTED)
    response.headers["Cache-Control"] = TOKENS_NOT_STORED
    return TokenResponse(
        access_token=result.access_token,
        expires_in=result.expires_in,
        refresh_token=result.refresh_token,
    )


@router.post(
    "/password-reset/request",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=MessageResponse,
    responses=_RATE_LIMITED,
)
async def password_reset_request(body: PasswordResetRequest, request: Request) -> MessageResponse:
    """Mail a password reset code if the account exists; the answer is the same either way."""
    service, client_ip = caller(request)
    await accept_code_request(service, body.email, Purpose.PASSWORD_RESET, client_ip)
    return MessageResponse(message=RESET_REQUESTED)


@router.post("/password-reset/confirm", response_model=MessageResponse, responses=_INVALID_CODE)
async def password_reset_confirm(body: PasswordResetConfirm, request: Request) -> MessageResponse:
    """Set a new password with a reset code. Every earlier token stops working; the owner is
    notified by mail; the client is not logged in."""
    service, client_ip = caller(request)
    await service.confirm_password_reset(
        body.email, body.code, body.new_password, client_ip=client_ip
    )
    return MessageResponse(message=PASSWORD_RESET_DONE)


@router.get(
    "/me",
    response_model=UserResponse,
    responses={401: {"model": ErrorResponse, "description": "Invalid token"}},
    openapi_extra=BEARER_SECURITY,
)
async def me(request: Request) -> Response:
    """The account the bearer token belongs to."""
    user = await bearer_user(request)
    # Serialised here, once: returned as a model, FastAPI would validate it again against
    # response_model and encode it through jsonable_encoder (`make bench`, me).
    answer = UserResponse.model_validate(user, from_attributes=True)
    return Response(answer.model_dump_json(), media_type="application/json")
