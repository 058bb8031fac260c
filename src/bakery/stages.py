"""What a render covers. "full" is one server configured from a plain image.
"image" is the part that is the same on every server (baked with Packer);
"instance" is the part that must differ per server (host name, secrets,
certificate), passed when a server is started from that image.

Kept apart from plan.py so the command line can offer the choice without
importing the engine."""

STAGES = ("full", "image", "instance")
