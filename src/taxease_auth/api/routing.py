"""The API's routers: one way to make them, so every operation is named alike."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute


def operation_id(route: APIRoute) -> str:
    """An operation's OpenAPI id is its route's name (``verify_otp``), stable for clients
    generated from the document, rather than FastAPI's path-and-method default."""
    return route.name


def api_router(**options: Any) -> APIRouter:
    """An APIRouter whose routes are named by ``operation_id``. The id is fixed when a route
    is declared: the app takes these routes into its own router (``app.create_app``), where
    the app's own naming function no longer applies."""
    return APIRouter(generate_unique_id_function=operation_id, **options)
