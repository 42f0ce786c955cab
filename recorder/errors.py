"""Errors of the recorder."""


class RecorderError(Exception):
    """Root of every recorder error."""


class InvalidRule(RecorderError):
    """An anomaly rule failed validation."""


class RecordingFailed(RecorderError):
    """A recording could not be written; the session it records must end."""


class TamperedRecording(RecorderError):
    """A recording file does not match its hash chain or its seal."""


class NotFound(RecorderError):
    """No such recording."""


class InvalidQuery(RecorderError):
    """A filter, limit or cursor given to a recording query is not valid."""
