"""The web console: review queues, top issues, sessions, patches, policies and datasets in a
browser. A client of the public gRPC API, served by `feedbackloop serve` on its own port or
by `feedbackloop console` as a separate process (`runner.py`)."""
