"""The HTTP front door: Envoy's http_service, nginx auth_request, Caddy/Traefik forward_auth."""
