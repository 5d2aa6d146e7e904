"""Routing: policy revisions, the routing engine in the pipeline, and the action sinks
(prompt patches, datasets, human review queues)."""
