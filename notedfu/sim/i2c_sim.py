"""``i2c:sim://notecard?…``: the simulated Notecard on a simulated I2C bus (found by :mod:`notedfu.ports`)."""

from __future__ import annotations

from notedfu.sim import registry
from notedfu.sim.i2c import SimI2CBus
from notedfu.sim.notecard import card_from_options
from notedfu.sim.protocol_sim import parse_sim_url


def open_bus(url: str, address: int) -> SimI2CBus:
    """The bus a ``sim://notecard?…`` URL describes (``name=`` shares one card between opens)."""
    _, opts = parse_sim_url(url)
    opts.setdefault("profile", ["i2c100k"])
    name = opts.get("name", [None])[-1]
    card = registry.get_or_create("notecard", name, lambda: card_from_options(opts))
    return SimI2CBus(card, address)
