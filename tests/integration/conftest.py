"""Fixtures shared by the integration test modules.

The real Milvus server is a session fixture defined here once: a session fixture imported into
two modules is two fixtures, and the second server could not start beside the first (both take
Milvus' fixed etcd ports).
"""

from milvus_server import milvus_server_uri  # noqa: F401  (fixture)
