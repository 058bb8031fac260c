"""Packaging the rendered user-data: seed ISO, Packer folder, SD-card image."""
