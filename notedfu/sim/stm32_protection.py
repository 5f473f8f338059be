"""The emulated bootloader's protection commands: readout and write protect/unprotect (each resets the chip)."""

from __future__ import annotations

from notedfu.protocol.an3155 import ACK, NACK, xor


class ProtectionCommands:
    """Mixed into :class:`notedfu.sim.stm32.Stm32Sim`: the four commands that change protection, as generators
    of the emulator's command state machine."""

    def _readout_protect(self):
        self.readout_protected = True
        self._send(bytes([ACK]))
        self._chip_reset(lose_output=False)
        return
        yield

    def _readout_unprotect(self):
        self.readout_protected = False
        self.write_protected.clear()
        self._erase_pages(list(range(len(self.pages))))  # its ACK is the second one, after the mass erase
        self._chip_reset(lose_output=False)
        return
        yield

    def _write_unprotect(self):
        self.write_protected.clear()
        self._send(bytes([ACK]))
        self._chip_reset(lose_output=False)
        return
        yield

    def _write_protect(self):
        count = (yield 1)[0]
        rest = yield count + 2
        if xor(bytes([count]) + rest[:-1]) != rest[-1]:
            self._send(bytes([NACK]))
            return
        self.write_protected.update(rest[:-1])
        self._send(bytes([ACK]))
        self._chip_reset(lose_output=False)
