"""The Envoy edge: CheckRequest in, CheckResponse out, and the gRPC server."""
