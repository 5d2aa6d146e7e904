"""Who administers the deployment, rather than one project in it.

A deployment admin is a principal with the `admin` scope in the default project
(`FEEDBACKLOOP_DEFAULT_PROJECT`): an admin key created with `keys create --project default
--scope admin`, or, on a loopback server that serves keyless requests, the anonymous
development principal (which acts as the default project with every scope). The default
project is the deployment's own: the one `serve` creates, the one a keyless client lands in,
so its administrators are the operators. Tenants get keys of their own projects, which never
reach across projects.
"""

from __future__ import annotations

from feedbackloop.auth import Principal, Scope
from feedbackloop.errors import PermissionDenied


def is_deployment_admin(principal: Principal, default_project: str) -> bool:
    return principal.project_id == default_project and Scope.ADMIN in principal.scopes


def require_deployment_admin(principal: Principal, default_project: str, what: str) -> None:
    if not is_deployment_admin(principal, default_project):
        raise PermissionDenied(
            f"{what}: only a deployment admin may (an API key with the 'admin' scope in the default "
            f"project '{default_project}'); this key belongs to project '{principal.project_id}'"
        )
