"""OTLP in: OpenTelemetry's TraceService/Export on the gRPC port, LLM spans as interactions."""
