"""Request and response bodies, with the examples shown in the OpenAPI document.

Emails are canonicalised here (``auth.emails``), so everything past the API sees one form per
address. Sizes are capped before any hashing: a 1 MB password is refused, never hashed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from taxease_auth.auth.emails import canonical_email
from taxease_auth.auth.names import clean_name
from taxease_auth.store.models import (
    EMAIL_MAX_LENGTH,
    NAME_MAX_LENGTH,
    REGISTRATION_ID_MAX_LENGTH,
    Purpose,
)

# Generous bound on raw input; the policy's own maximum (PASSWORD_MAX_LENGTH) is checked later
# with a clearer message.
PASSWORD_INPUT_MAX = 1024
CHALLENGE_ID_MAX = 64
# A letter may arrive as several code points (NFD "e" + U+0301) before it is composed.
NAME_INPUT_FACTOR = 4
# taxease_auth.locales.SUPPORTED_LOCALES, spelt out for the schema (a test keeps them equal).
Locale = Literal["en", "fr-CA"]


Email = Annotated[
    str,
    StringConstraints(
        max_length=EMAIL_MAX_LENGTH + 66
    ),  # room for spaces and IDN before canonicalising
    AfterValidator(canonical_email),
    Field(examples=["test@example.com"]),
]
Password = Annotated[
    str,
    StringConstraints(min_length=1, max_length=PASSWORD_INPUT_MAX),
    Field(examples=["correct horse battery staple"]),
]
# Letters, marks, spaces, apostrophes, hyphens and periods only (auth.names); the composed
# length is checked there, so the raw bound leaves room for a decomposed (NFD) name.
Name = Annotated[
    str,
    StringConstraints(max_length=NAME_MAX_LENGTH * NAME_INPUT_FACTOR),
    AfterValidator(clean_name),
]
# Exactly ASCII digits: "[0-9]", never "\d" (Unicode digits) and never a JSON number.
# The exact length (OTP_LENGTH) is checked by the service, which answers the generic 400.
Code = Annotated[str, StringConstraints(pattern=r"^[0-9]{6,10}$"), Field(examples=["123456"])]
ChallengeId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=CHALLENGE_ID_MAX, pattern=r"^[A-Za-z0-9_-]+$"),
]
# What /register answered (base64url); capped and checked like a challenge id.
RegistrationId = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=REGISTRATION_ID_MAX_LENGTH, pattern=r"^[A-Za-z0-9_-]+$"
    ),
    Field(examples=["n3Xq8bW1s0mZk2yVt4Lr9A"]),
]
_REGISTRATION_ID_FOR = (
    "For purpose `email_verification` (ignored for the others): the `registration_id` "
    "/register answered. "
)


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)


class RegisterRequest(_Body):
    email: Email
    password: Password
    first_name: Name = Field(examples=["Test"])
    last_name: Name = Field(examples=["User"])
    accept_terms: bool = Field(description="Must be true.", examples=[True])
    locale: Locale | None = Field(
        default=None,
        description="The language of this account's mail, kept for every later mail (`en` or "
        "`fr-CA`); without it, DEFAULT_LOCALE.",
        examples=["fr-CA"],
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "email": "test@example.com",
                    "password": "correct horse battery staple",
                    "first_name": "Test",
                    "last_name": "User",
                    "accept_terms": True,
                }
            ]
        }
    )

    @field_validator("accept_terms")
    @classmethod
    def _terms_accepted(cls, value: bool) -> bool:
        if not value:
            raise ValueError("the terms must be accepted")
        return value


class VerifyOtpRequest(_Body):
    email: Email
    code: Code
    purpose: Purpose = Field(examples=["email_verification"])
    challenge_id: ChallengeId | None = Field(
        default=None, description="Required for purpose `login`: the id /login returned."
    )
    registration_id: RegistrationId | None = Field(
        default=None,
        description=_REGISTRATION_ID_FOR
        + "With it, only that registration's code matches and only its password is set.",
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"email": "test@example.com", "code": "123456", "purpose": "email_verification"}
            ]
        }
    )


class RequestOtpRequest(_Body):
    email: Email
    purpose: Purpose = Field(examples=["email_verification"])
    challenge_id: ChallengeId | None = Field(
        default=None, description="For purpose `login`: re-send for this live challenge only."
    )
    registration_id: RegistrationId | None = Field(
        default=None,
        description=_REGISTRATION_ID_FOR
        + "Re-sends that registration's code (without it: the newest registration's).",
    )
    locale: Locale | None = Field(
        default=None,
        description="The language of this mail only (`en` or `fr-CA`); without it, the "
        "account's language, else DEFAULT_LOCALE.",
        examples=["fr-CA"],
    )


class LoginRequest(_Body):
    email: Email
    password: Password


class PasswordResetRequest(_Body):
    email: Email


class PasswordResetConfirm(_Body):
    email: Email
    code: Code
    new_password: Password


class MessageResponse(BaseModel):
    message: str = Field(examples=["OTP verified successfully"])


class RegisterResponse(BaseModel):
    message: str = Field(
        examples=["Registration received. Check your email for a verification code."]
    )
    registration_id: str = Field(
        description="Send it with the code to /verify-otp: only this registration's code and "
        "password then count. A fresh one for every registration, whatever the address.",
        examples=["n3Xq8bW1s0mZk2yVt4Lr9A"],
    )


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires.", examples=[900])
    refresh_token: str = Field(
        description="Single use: POST it to /token/refresh for the next pair.",
        examples=["q3Xn0Vj2mJ8bS1tY6wZcE4rA9uK7pL5hD0fG2iO8xMe"],
    )


# 32 random bytes, base64url without padding: exactly this text, nothing else.
RefreshTokenText = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9_-]{43}$"),
    Field(examples=["q3Xn0Vj2mJ8bS1tY6wZcE4rA9uK7pL5hD0fG2iO8xMe"]),
]
# Session ids are made like refresh tokens.
SessionId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{43}$")]


class RefreshRequest(_Body):
    refresh_token: RefreshTokenText


class SessionResponse(BaseModel):
    id: str
    created_at: datetime
    last_used_at: datetime = Field(description="The session's last refresh (or its login).")
    ip: str | None = Field(description="The client address at login.")
    user_agent: str | None = Field(description="The User-Agent at login (first 256 characters).")
    current: bool = Field(description="True for the session of the token that asked.")


class VerifyResponse(BaseModel):
    message: str = Field(examples=["OTP verified successfully"])
    access_token: str | None = Field(default=None, description="Only for purpose `login`.")
    token_type: Literal["bearer"] | None = Field(
        default=None, description="Only for purpose `login`."
    )
    expires_in: int | None = Field(default=None, description="Only for purpose `login`.")
    refresh_token: str | None = Field(default=None, description="Only for purpose `login`.")


class LoginChallengeResponse(BaseModel):
    otp_required: Literal[True] = True
    challenge_id: str
    expires_in: int = Field(description="Seconds until the mailed login code expires.")


class UserResponse(BaseModel):
    id: int
    email: str
    first_name: str
    last_name: str
    email_verified: bool
    created_at: datetime
    last_login_at: datetime | None


class ErrorResponse(BaseModel):
    detail: str = Field(examples=["Invalid or expired OTP"])
