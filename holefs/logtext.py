"""Text that goes into the daemon's log, where users choose some of it.

A file name, a process name or an option value may hold a newline and a
line that looks like the daemon's own.  `quoted` shows such a value with
its control characters escaped; `SafeFormatter` escapes whatever reaches
a log message unquoted, so no record spans two lines but a traceback.
"""

import logging
import os


def quoted(name):
    """A name (bytes or str) as a quoted, escaped string: 'a\\nb'."""
    return repr(os.fsdecode(name))


def escaped(text):
    """*text* with every character that is not printable escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class SafeFormatter(logging.Formatter):
    """A Formatter whose messages never hold a raw control character."""

    def formatMessage(self, record):
        record.message = escaped(record.message)
        return super().formatMessage(record)
