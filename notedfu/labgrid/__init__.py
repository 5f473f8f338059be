"""notedfu on labgrid: drivers for the Notecard and the STM32 ROM bootloader, and a strategy.

``pip install 'notedfu[labgrid]'``, then name this package under ``imports:`` in a
labgrid environment file; importing it registers :class:`NotecardDFUDriver`,
:class:`STM32ROMDriver` and :class:`NotedfuStrategy` with labgrid's target
factory, the way labgrid loads third-party drivers. They bind to labgrid's
serial port resources — local (``RawSerialPort``, ``USBSerialPort``) or exported
(``NetworkSerialPort``, served by the exporter's ser2net) — and, for BOOT0/NRST,
to any ``DigitalOutputProtocol`` driver (GPIO, a serial line, a relay). The
protocol work is notedfu's own clients: nothing here speaks a byte itself.
"""

from notedfu.labgrid.drivers import NotecardDFUDriver, STM32ROMDriver, serial_spec
from notedfu.labgrid.strategy import NotedfuStrategy, Status

__all__ = ["NotecardDFUDriver", "STM32ROMDriver", "NotedfuStrategy", "Status", "serial_spec"]
