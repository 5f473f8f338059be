"""``pytest hil --lg-env env.yaml``: the rig comes from a labgrid environment (local or remote place).

The environment names notedfu's drivers (``imports: [notedfu.labgrid]``): the
:class:`~notedfu.labgrid.NotecardDFUDriver` and
:class:`~notedfu.labgrid.STM32ROMDriver` give the scenarios their ``--notecard``
and ``--target`` specs — a local device, or the exporter's RFC 2217 port for a
remote place — and the STM32 driver's ``boot0``/``reset`` line specs. The
environment's ``options:`` may add ``console`` (a serial spec, or
``qemu:FLASH_FILE`` on the simulated rig), ``pattern`` and ``confirm_timeout``;
``paths: firmware:`` says where the demo images for the board are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hil.hilrig import RigDescription, RigFileError


def description_from_labgrid(target: Any, env: Any) -> RigDescription:
    """The rig a labgrid target describes."""
    try:
        card = target.get_driver("NotecardDFUDriver", activate=False)
        stm32 = target.get_driver("STM32ROMDriver", activate=False)
    except Exception as exc:  # labgrid's NoDriverFoundError and friends: the env file is what is wrong
        raise RigFileError(f"labgrid environment: {exc} (see hil/README.md, 'On labgrid')") from exc
    if stm32.boot0_output is not None or stm32.reset_output is not None:
        raise RigFileError("labgrid environment: BOOT0/NRST bound to labgrid outputs; the scenarios run notedfu's "
                           "command line, which takes line specs: give STM32ROMDriver boot0:/reset: instead")
    options = env.config.data.get("options") or {}  # labgrid's get_option raises where a default is None
    firmware = env.config.get_paths().get("firmware")
    fields: dict[str, Any] = {"console": options.get("console") or None, "pattern": options.get("pattern"),
                              "confirm_timeout": float(options.get("confirm_timeout", 15.0))}
    description = RigDescription(card.spec, stm32.spec, stm32.boot0 or None, stm32.reset or None,
                                 **{k: v for k, v in fields.items() if v is not None})
    if firmware:
        description.firmware = Path(firmware)
    return description
