"""The guide's scenario as a Django site (consumer alex/123456, GET /v1/json behind basic-auth)."""
