"""Test-only: a parser that misbehaves on demand, loaded through PYTHONPATH by tests that put this
directory first (`sitecustomize` is imported at interpreter start-up). Production never has it on
its path, so no mail can trigger it.

A message with the header `X-Test-Parser: spin` makes `parse_message` run a regular expression
that holds the GIL for minutes without ever checking for signals (the class of bug a deadline
inside the process cannot stop); `loop` spins in Python code; `sleep` makes it stall without
working, as a parser starved by a loaded machine would; `die` kills its own process (a crash in
C code, or the kernel's OOM killer). With BOMBOM_TEST_PARSES set, each parse appends a byte to
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


def _misbehave(raw: bytes) -> None:
    if b"X-Test-Parser: spin" in raw:
        re.search(r"(?s).*x.*overflow:hidden", "height:0;" * 40_000)
    elif b"X-Test-Parser: loop" in raw:
        while True:  # Python code: signals do get through
            pass
    elif b"X-Test-Parser: sleep" in raw:
        time.sleep(3600)
    elif b"X-Test-Parser: die" in raw:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("BOMBOM_TEST_PARSES"):  # a byte per parse: how often a message was parsed
        with open(os.environ["BOMBOM_TEST_PARSES"], "ab") as f:
            f.write(b"x")


class _Wrap(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: object, target: object = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if name != "bombom_pipe.parse":
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        run = spec.loader.exec_module

        def exec_module(module: types.ModuleType) -> None:
            run(module)
            real = module.parse_message

            def parse_message(raw: bytes, *args: object, **kwargs: object) -> object:
                _misbehave(raw)
                return real(raw, *args, **kwargs)

            module.parse_message = parse_message

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _Wrap())
