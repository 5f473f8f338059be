"""Sans-I/O protocol cores: bytes in, bytes and typed results out, no ports, no clocks.

``notecard`` (the JSON request/answer framing note-c uses), ``cobs`` (the binary
mode's framing), ``an3155`` (the STM32 ROM bootloader's frames), ``chips`` (what
each STM32 family is) and ``firmware`` (what an image says about itself). The
clients execute them over links; the simulators use the same modules, never a
client.
"""
