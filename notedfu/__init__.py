"""notedfu: a host-side firmware-update agent for Blues Notecard products."""

__version__ = "0.1.0"
