"""IdentityService: who the calling API key is.

A client that adapts to its key (the web console hides what the key may not do) asks here
instead of guessing from refusals; the server still checks every call on its own.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from feedbackloop import auth
from feedbackloop.v1 import identity_pb2, identity_pb2_grpc

SERVICE_NAME = "feedbackloop.v1.IdentityService"
# None: any valid key may call it, whatever its scopes (a key must learn its scopes to use them).
REQUIRED_SCOPES: Mapping[str, auth.Scope | None] = {f"/{SERVICE_NAME}/WhoAmI": None}


class IdentityServicer(identity_pb2_grpc.IdentityServiceServicer):
    def WhoAmI(
        self, request: identity_pb2.WhoAmIRequest, context: grpc.ServicerContext
    ) -> identity_pb2.WhoAmIResponse:
        principal = auth.current_principal()
        return identity_pb2.WhoAmIResponse(
            project=principal.project_id,
            key_id=principal.key_id,
            scopes=sorted(scope.value for scope in principal.scopes),
            reviewer=principal.reviewer_identity,
        )


def add_to_server(server: grpc.Server) -> None:
    identity_pb2_grpc.add_IdentityServiceServicer_to_server(IdentityServicer(), server)
