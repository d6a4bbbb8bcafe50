"""End-to-end harness for edge-jwt: Envoy, JWKS server, echo upstream, issuer, JWT helpers."""
