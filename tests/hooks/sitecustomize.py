"""Test-only: a parser that misbehaves on demand, loaded through PYTHONPATH by tests that put this
directory first (`sitecustomize` is imported at interpreter start-up). Production never has it on
its path, so no mail can trigger it.

A message with the header `X-Test-Parser: spin` makes `parse_message` run a regular expression
that holds the GIL for minutes without ever checking for signals (the class of bug a deadline
inside the process cannot stop); `loop` spins in Python code; `sleep` makes it stall without
working, as a parser starved by a loaded machine would; `memory` asks for 2 GiB at once, as a
memory bomb would. `X-Test-Store: spin` runs the same regular expression when `store.deliver`
is called for that message (the parser itself behaves), and `X-Test-Store: stall` blocks SIGALRM
and sleeps there, as a C call that restarts on EINTR would: a process stuck while storing.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import re
import signal
import sys
import time
import types


def _misbehave(raw: bytes) -> None:
    if b"X-Test-Parser: spin" in raw:
        _spin()
    elif b"X-Test-Parser: loop" in raw:
        while True:  # Python code: signals do get through
            pass
    elif b"X-Test-Parser: sleep" in raw:
        time.sleep(3600)
    elif b"X-Test-Parser: memory" in raw:
        bomb = b"\0" * (2 << 30)
        del bomb
    _store[0] = (b"spin" if b"X-Test-Store: spin" in raw
                 else b"stall" if b"X-Test-Store: stall" in raw else b"")


_store = [b""]  # what the store stage does, set by the last parse in this process


def _spin() -> None:
    re.search(r"(?s).*x.*overflow:hidden", "height:0;" * 40_000)


def _parse_hook(module: types.ModuleType) -> None:
    real = module.parse_message

    def parse_message(raw: bytes, *args: object, **kwargs: object) -> object:
        _misbehave(raw)
        return real(raw, *args, **kwargs)

    module.parse_message = parse_message


def _store_hook(module: types.ModuleType) -> None:
    real = module.deliver

    def deliver(*args: object, **kwargs: object) -> object:
        if _store[0] == b"spin":
            _spin()
        elif _store[0] == b"stall":
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            time.sleep(3600)
        return real(*args, **kwargs)

    module.deliver = deliver


HOOKS = {"bombom_pipe.parse": _parse_hook, "bombom_pipe.store": _store_hook}


class _Wrap(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: object, target: object = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if name not in HOOKS:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        run = spec.loader.exec_module

        def exec_module(module: types.ModuleType) -> None:
            run(module)
            HOOKS[name](module)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _Wrap())
