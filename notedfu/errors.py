"""Errors with stable codes and the process exit codes they map to.

Every failure the agent reports carries a ``code`` that scripts and rigs may
match on (it never changes between releases) and a human ``message``.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of the ``notedfu`` command (documented in the README)."""

    OK = 0
    FAILURE = 1  # an unexpected internal error
    USAGE = 2  # bad command line or configuration
    LINK = 3  # the Notecard (or target) could not be reached or kept talking
    NOT_READY = 4  # nothing to do yet: no image ready, still downloading
    INTEGRITY = 5  # data failed verification (chunk/image MD5, CRC32, length)
    BAD_RESPONSE = 6  # the device answered something we refuse to trust
    CARD = 7  # the Notecard answered with an error we cannot work around
    TARGET = 8  # the target (STM32 bootloader or an external tool) failed
    UNCONFIRMED = 9  # flashed, but the new firmware did not prove it booted (notedfu update)
    UP_TO_DATE = 10  # the offered image is already installed (notedfu update)
    AWAITING_APPROVAL = 11  # manual policy: the image waits for `notedfu approve` (notedfu update)
    CANCELLED = 12  # `notedfu cancel` stopped the job before the target was touched
    SIGNATURE = 13  # a public key is configured and the image is unsigned or badly signed
    NO_DAEMON = 14  # `notedfu status/approve/cancel/events/install`: no daemon on the socket
    TRY_LATER = 75  # a transient failure: nothing was lost, the next attempt goes on (sysexits EX_TEMPFAIL)
    INTERRUPTED = 130  # Ctrl-C / SIGTERM; everything was put back first


class NotedfuError(Exception):
    """Base class: a failure with a stable ``code`` and an exit code."""

    code = "E_INTERNAL"
    exit_code = ExitCode.FAILURE
    permanent = False
    """Whether a retry cannot fix it. Only a permanent failure of a Notehub image is reported to
    Notehub (``dfu.status stop:true err:…``, which deletes the card's copy); anything else is
    transient: the card's image and the staged image are kept and a later attempt goes on."""

    def __init__(self, message: str, *, code: str | None = None, permanent: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if permanent is not None:
            self.permanent = permanent

    def as_dict(self) -> dict[str, str]:
        """The error as it appears in JSON events and ``--json`` output."""
        return {"code": self.code, "message": self.message}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class UsageError(NotedfuError):
    """The command line, a spec string or a config value is wrong."""

    code = "E_USAGE"
    exit_code = ExitCode.USAGE


class LinkError(NotedfuError):
    """The device could not be opened, or stopped answering."""

    code = "E_LINK"
    exit_code = ExitCode.LINK


class NotReadyError(NotedfuError):
    """There is no image to fetch (yet)."""

    code = "E_NO_IMAGE"
    exit_code = ExitCode.NOT_READY


class NoImage(NotReadyError):
    """The card offers no image (or no longer the one a job was for)."""

    code = "E_NO_IMAGE"


class IntegrityError(NotedfuError):
    """Data failed verification."""

    code = "E_INTEGRITY"
    exit_code = ExitCode.INTEGRITY


class BadResponseError(NotedfuError):
    """The device sent something malformed, absurd or hostile."""

    code = "E_BAD_RESPONSE"
    exit_code = ExitCode.BAD_RESPONSE


class CardError(NotedfuError):
    """The Notecard refused a request with an error we cannot work around."""

    code = "E_CARD"
    exit_code = ExitCode.CARD


class Busy(NotedfuError):
    """Another program holds what this one needs: a port, or the state directory."""

    code = "E_BUSY"
    exit_code = ExitCode.LINK


class Interrupted(NotedfuError):
    """The user or the service manager asked us to stop."""

    code = "E_INTERRUPTED"
    exit_code = ExitCode.INTERRUPTED


class TargetError(NotedfuError):
    """The target, its bootloader or a flashing tool failed; ``code`` says how."""

    code = "E_TARGET"
    exit_code = ExitCode.TARGET

class Cancelled(NotedfuError):
    """``notedfu cancel`` stopped the job before the target was touched."""

    code = "E_CANCELLED"
    exit_code = ExitCode.CANCELLED
    permanent = True  # the user's decision, not a fault to retry: Notehub hears the image was declined


class StageFailed(NotedfuError):
    """A stage failed; carries the stage name and the error."""

    def __init__(self, stage: str, error: NotedfuError) -> None:
        super().__init__(error.message, code=error.code, permanent=error.permanent)
        self.stage = stage
        self.error = error
        self.exit_code = error.exit_code


class Unconfirmed(NotedfuError):
    """The new firmware did not prove it booted."""

    code = "E_UNCONFIRMED"
    exit_code = ExitCode.UNCONFIRMED


class ImageSuperseded(NotedfuError):
    """The card no longer offers the job's image: the job is dropped, nothing is reported."""

    code = "E_IMAGE_CHANGED"
    exit_code = ExitCode.TRY_LATER


# ------------------------------------------------------------------ the card said no
class CardRequestError(CardError):
    """The card answered ``{"err": …}``; the subclass says which kind of refusal (from its ``{tags}``)."""

    code = "E_CARD_ERROR"

    def __init__(self, request: str, err: str, tags: frozenset[str] = frozenset()) -> None:
        self.request = request
        self.err = err
        self.tags = tags
        super().__init__(f"{request}: {err}")


class DfuNotReady(CardRequestError):
    """``{dfu-not-ready}``: DFU mode is still coming up (transient: ask again)."""

    code = "E_DFU_NOT_READY"


class DfuModeLost(CardRequestError):
    """``{hub-mode}``: the card is not (or no longer) in DFU mode."""

    code = "E_DFU_MODE_LOST"


class ChunkRefused(CardRequestError):
    """``{dfu-dl-chunk-length}``: the card will not serve a chunk that long."""

    code = "E_CHUNK_TOO_LARGE"


class NotSupported(CardRequestError):
    """``{not-supported}``: this card's firmware does not have the request (or the option)."""

    code = "E_NOT_SUPPORTED"


class CardIO(CardRequestError):
    """``{io}``: the card could not do it just now (note-c retries these)."""

    code = "E_CARD_IO"


# ------------------------------------------------------------------ the target's bootloader
class TargetNack(TargetError):
    """The bootloader NACKed a command or its data."""

    code = "E_TARGET_NACK"


class TargetTimeout(TargetError):
    """The bootloader (or the port) did not answer in time."""

    code = "E_TARGET_TIMEOUT"


class TargetProtocolError(TargetError):
    """The bootloader answered something AN3155 does not allow."""

    code = "E_TARGET_PROTOCOL"


class TargetIO(TargetError):
    """The target's port failed (unplugged, reset adapter)."""

    code = "E_TARGET_IO"


class TargetNoSync(TargetError):
    """No answer to the sync byte: not in its bootloader, or miswired."""

    code = "E_TARGET_NO_SYNC"


RESYNCABLE = (TargetNack, TargetTimeout, TargetProtocolError, TargetIO)
"""Target failures after which the bootloader can be brought back in step (and the command retried)."""


# ------------------------------------------------------------------ the rest of the tree, by where it arises
class ImageFileError(UsageError):
    """The image file cannot be used."""

    code = "E_IMAGE_FILE"


class LinkTimeout(LinkError):
    """The card sent nothing before the deadline."""

    code = "E_NOTECARD_TIMEOUT"


class LinkIncomplete(LinkError):
    """The card started an answer and stopped (note-c: "transaction incomplete")."""

    code = "E_NOTECARD_IO"


class StagingError(NotedfuError):
    """The state directory could not take what had to be written (transient: nothing verified is lost)."""

    code = "E_STAGING"


class ConfigError(UsageError):
    """The configuration file is unusable."""

    code = "E_CONFIG"


class SignatureError(IntegrityError):
    """The image is unsigned, or its signature does not verify."""

    code = "E_SIGNATURE"
    exit_code = ExitCode.SIGNATURE
    permanent = True  # the image's bytes decide it: asking again gets the same bytes


class ControlError(NotedfuError):
    """A request the daemon refuses; the code goes back to the client."""

    code = "E_BAD_REQUEST"
    exit_code = ExitCode.USAGE


class NoDaemon(NotedfuError):
    """Nothing listens on the control socket."""

    code = "E_NO_DAEMON"
    exit_code = ExitCode.NO_DAEMON


class PortBusy(Busy):
    """Another process holds the port."""


class CobsError(IntegrityError, ValueError):
    """Binary-mode data that is not valid COBS (the Notecard's framing of binary data)."""

    code = "E_CHUNK_ENCODING"
