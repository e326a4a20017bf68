"""Deployment tools: configs for what runs beside the server (Envoy), never imported by it."""
