"""The console's screens, one module each; every module exports `routes`."""

from __future__ import annotations

from starlette.routing import BaseRoute

from feedbackloop.console.pages import (
    datasets,
    issues,
    patches,
    policies,
    prompts,
    reviews,
    search,
    sessions,
    sign_in,
    trends,
)

PAGE_ROUTES: list[BaseRoute] = [
    *sign_in.routes,
    *reviews.routes,
    *issues.routes,
    *search.routes,
    *sessions.routes,
    *patches.routes,
    *prompts.routes,
    *policies.routes,
    *datasets.routes,
    *trends.routes,
]
