"""messages-gateway: serve the Anthropic Messages API from OpenAI-compatible upstreams."""

__version__ = "0.1.0"
