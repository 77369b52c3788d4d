"""Keep /api/ answers JSON: Django's own 404/405 pages are HTML."""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus

from django.http import HttpRequest, HttpResponse, JsonResponse


class ApiJsonErrorsMiddleware:
    """Turn a non-JSON error under /api/ (unknown path, wrong method) into
    ``{"detail": ...}`` with the same status and headers."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            request.path.startswith("/api/")
            and response.status_code >= 400
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            phrase = HTTPStatus(response.status_code).phrase
            detail = {404: f"no API endpoint at {request.path}"}.get(response.status_code, phrase)
            if response.status_code == 405 and response.has_header("Allow"):
                detail = f"method {request.method} not allowed; use {response['Allow']}"
            replacement = JsonResponse({"detail": detail}, status=response.status_code)
            if response.has_header("Allow"):
                replacement["Allow"] = response["Allow"]
            return replacement
        return response
