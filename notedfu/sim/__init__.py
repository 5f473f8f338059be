"""Simulators at the byte level: a Notecard (serial and I2C) behind real port APIs.

Importing this package registers the ``sim://`` scheme with pyserial, so
``serial.serial_for_url("sim://notecard?image=fw.bin")`` opens a simulated
card — from the agent, from note-python, or from a user's own script.
"""

import serial

if "notedfu.sim" not in serial.protocol_handler_packages:
    serial.protocol_handler_packages.append("notedfu.sim")
