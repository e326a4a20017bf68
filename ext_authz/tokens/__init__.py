"""Tokens: finding the credential, reading its format, verifying it, checking claims."""
