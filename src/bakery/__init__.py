"""bakery: one bakery.yaml in, first-boot configuration for a Python web server out."""

__version__ = "0.1.0"
