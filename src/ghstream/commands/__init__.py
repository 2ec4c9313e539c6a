"""One module per ``ghstream`` command; each exposes ``register(app)``."""
