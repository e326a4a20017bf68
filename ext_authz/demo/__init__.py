"""Demo parts: an identity provider, an echo upstream and a runner for ``make demo``."""
