"""`bombom-deliver`: the wrapper that guarantees Postfix only ever sees 0, 67 or 75.

Only the standard library is imported here and in the supervisor below it, so that even a broken
dependency (an ImportError while loading psycopg, say) or a bug anywhere below becomes a deferral
(75) with one status line, never Python's exit status 1, which Postfix would turn into a bounce
carrying a traceback. The status line is the only output, and whether it could be written never
changes the exit status.
"""

import os
import sys

ALLOWED = (0, 67, 75)


def main() -> None:
    code = 75
    line = b""
    try:
        from bombom_pipe.outcomes import status_line
        from bombom_pipe.supervisor import run

        outcome, text = run(sys.argv[1:])
        code = outcome.exit_code
        line = (status_line(outcome, text) + "\n").encode("utf-8", "replace")
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        code = e.code if e.code in ALLOWED else 75
        if code == 75:
            line = b"4.3.0 bad command line; see the bombom-deliver log\n"
    except BaseException as e:  # noqa: BLE001 - the whole point
        _last_resort_log(e)
        line = f"4.3.0 internal error ({type(e).__name__}); will retry\n".encode()
    if code not in ALLOWED:
        code = 75
    try:
        if line:
            os.write(1, line)
        sys.stdout.flush()  # argparse's --help text; our own status line bypasses the buffer
    except BaseException:  # noqa: BLE001 - a closed stdout must not change the status
        pass
    os._exit(code)  # no interpreter teardown: nothing after this line can change the status


def _last_resort_log(e: BaseException) -> None:
    """The traceback to syslog (facility mail); the regular log may be what failed. One record
    per frame and message, escaped like every log line (a message may quote a stranger)."""
    try:
        import syslog
        import traceback

        try:
            from bombom_pipe.log import printable
        except BaseException:  # noqa: BLE001
            printable = ascii
        syslog.openlog("bombom-deliver", syslog.LOG_PID, syslog.LOG_MAIL)
        for chunk in traceback.format_exception(e):
            syslog.syslog(syslog.LOG_ERR, printable(chunk.strip("\n")))
    except BaseException:  # noqa: BLE001
        pass


if __name__ == "__main__":
    main()
