"""The console's screens, one module each; every module exports `routes`."""

from __future__ import annotations

from starlette.routing import BaseRoute

from feedbackloop.console.pages import reviews, sign_in

PAGE_ROUTES: list[BaseRoute] = [*sign_in.routes, *reviews.routes]
