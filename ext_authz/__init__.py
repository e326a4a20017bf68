"""External authorization for Envoy: verify bearer tokens against a YAML policy."""

__version__ = "0.1.0"
