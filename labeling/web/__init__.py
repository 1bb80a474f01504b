"""Request-level concerns: middleware, health, the OpenAPI schema, input parsing, number
formatting, strict JSON, server paths kept out of answers."""
