"""Test-only: a parser that misbehaves on demand, loaded through PYTHONPATH by tests that put this
directory first (`sitecustomize` is imported at interpreter start-up). Production never has it on
its path, so no mail can trigger it.

A message with the header `X-Test-Parser: spin` makes `parse_message` run a regular expression
that holds the GIL for minutes without ever checking for signals (the class of bug a deadline
inside the process cannot stop); `loop` spins in Python code; `sleep` makes it stall without
working, as a parser starved by a loaded machine would; `pause` sleeps 3 s and goes on (slow,
within every budget); `die` kills its own process (a crash in C code, or the kernel's OOM
killer); `memory` asks for 2 GiB at once, as a memory bomb would; `stall` blocks SIGALRM and
sleeps, as a C call that restarts on EINTR would. `X-Test-Auth: ...` does the same in sender
authentication (auth.judge), `X-Test-Store: ...` in the store stage (store.deliver, storing an
article; the parser itself behaves). With BOMBOM_TEST_PARSES set, each parse appends a byte to
that file.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import signal
import sys
import time
import types


def _misbehave(raw: bytes, header: bytes) -> None:
    if header + b"spin" in raw:
        re.search(r"(?s).*x.*overflow:hidden", "height:0;" * 40_000)
    elif header + b"loop" in raw:
        while True:  # Python code: signals do get through
            pass
    elif header + b"sleep" in raw:
        time.sleep(3600)
    elif header + b"pause" in raw:  # slow, but within every budget
        time.sleep(3)
    elif header + b"die" in raw:
        os.kill(os.getpid(), signal.SIGKILL)
    elif header + b"memory" in raw:
        bomb = b"\0" * (2 << 30)
        del bomb
    elif header + b"stall" in raw:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(3600)


def _raw(module: str, args: tuple) -> bytes:
    """The message's bytes from the wrapped function's arguments."""
    if module == "bombom_pipe.parse":  # parse_message(raw, ...)
        return args[0]
    if module == "bombom_pipe.auth":  # judge(settings, raw, msg, ...)
        return args[1]
    if args[2] is None:  # store.deliver(conn, delivery, msg, ...): only an article's store
        return b""  # misbehaves; recording a quarantine (no parsed message) goes through
    with open(args[1].raw_path, "rb") as f:
        return f.read(1 << 16)


#: module -> (function, the header that makes it misbehave)
WRAP = {"bombom_pipe.parse": ("parse_message", b"X-Test-Parser: "),
        "bombom_pipe.auth": ("judge", b"X-Test-Auth: "),
        "bombom_pipe.store": ("deliver", b"X-Test-Store: ")}


class _Wrap(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: object, target: object = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if name not in WRAP:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        run = spec.loader.exec_module
        function, header = WRAP[name]

        def exec_module(module: types.ModuleType) -> None:
            run(module)
            real = getattr(module, function)

            def wrapped(*args: object, **kwargs: object) -> object:
                raw = _raw(name, args)
                _misbehave(raw, header)
                if name == "bombom_pipe.parse" and os.environ.get("BOMBOM_TEST_PARSES"):
                    with open(os.environ["BOMBOM_TEST_PARSES"], "ab") as f:
                        f.write(b"x")  # a byte per parse: how often a message was parsed
                return real(*args, **kwargs)

            setattr(module, function, wrapped)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _Wrap())
